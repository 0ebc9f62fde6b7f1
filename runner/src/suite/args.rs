//! Reads one step's arguments: every field is known, typed, and located.

use super::error::{NResult, NodeError, unknown_name_help};
use super::names::{self, FlagTable};
use super::node::{Node, Value};

pub struct Args<'a> {
    op: &'a str,
    node: &'a Node,
    entries: &'a [(Node, Node)],
}

impl<'a> Args<'a> {
    /// `known` lists every field the step takes; any other key is an error.
    pub fn new(op: &'a str, node: &'a Node, known: &[&str]) -> NResult<Args<'a>> {
        let entries: &[(Node, Node)] = match &node.value {
            Value::Map(m) => m,
            Value::Null => &[],
            _ => {
                return Err(NodeError::at(
                    node,
                    format!("the arguments of step `{op}` must be a mapping, found {}", node.kind()),
                )
                .help(format!("write `{op}: {{ {}: ... }}`", known.first().unwrap_or(&"field"))));
            }
        };
        for (key, _) in entries {
            let name = key.as_str().unwrap_or_default();
            if !known.contains(&name) {
                return Err(NodeError::at(key, format!("unknown field `{}` for step `{op}`", key.render_compact()))
                    .help(unknown_name_help(name, known)));
            }
        }
        Ok(Args { op, node, entries })
    }

    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    pub fn req(&self, key: &str) -> NResult<&'a Node> {
        self.get(key).ok_or_else(|| {
            NodeError::at(self.node, format!("step `{}` needs `{key}`", self.op))
                .help(format!("add `{key}: ...` to the step"))
        })
    }

    pub fn u64_or(&self, key: &str, default: u64) -> NResult<u64> {
        self.get(key).map_or(Ok(default), names::parse_u64)
    }

    pub fn u64_req(&self, key: &str) -> NResult<u64> {
        names::parse_u64(self.req(key)?)
    }

    pub fn i64_or(&self, key: &str, default: i64) -> NResult<i64> {
        self.get(key).map_or(Ok(default), names::parse_i64)
    }

    pub fn u32_or(&self, key: &str, default: u32) -> NResult<u32> {
        match self.get(key) {
            None => Ok(default),
            Some(n) => {
                let v = names::parse_u64(n)?;
                u32::try_from(v)
                    .map_err(|_| NodeError::at(n, format!("`{key}` is a 32-bit field; {v:#x} does not fit")))
            }
        }
    }

    pub fn u8_or(&self, key: &str, default: u8) -> NResult<u8> {
        match self.get(key) {
            None => Ok(default),
            Some(n) => {
                let v = names::parse_u64(n)?;
                u8::try_from(v).map_err(|_| {
                    NodeError::at(n, format!("`{key}` is a byte; {v:#x} does not fit")).help("use 0..=0xff")
                })
            }
        }
    }

    pub fn flags_or(&self, key: &str, table: &FlagTable, default: u64) -> NResult<u64> {
        self.get(key).map_or(Ok(default), |n| table.parse(n))
    }

    /// One name out of a flag table used as an enumeration (lseek whence, madvise advice).
    pub fn word_or(&self, key: &str, table: &FlagTable, default: &str) -> NResult<u64> {
        match self.get(key) {
            None => table.bit(default).ok_or_else(|| NodeError::at(self.node, "internal: bad default")),
            Some(n) if matches!(n.value, Value::Seq(_)) => {
                Err(NodeError::at(n, format!("`{key}` takes one {}, not a list", table.what)))
            }
            Some(n) => table.parse(n),
        }
    }

    pub fn string_or(&self, key: &str, default: &str) -> NResult<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(n) => match &n.value {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(NodeError::at(n, format!("`{key}` must be a name, found {}", n.kind()))),
            },
        }
    }

    pub fn string_req(&self, key: &str) -> NResult<String> {
        let n = self.req(key)?;
        n.as_str()
            .map(str::to_string)
            .ok_or_else(|| NodeError::at(n, format!("`{key}` must be a name, found {}", n.kind())))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> NResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Node { value: Value::Bool(b), .. }) => Ok(*b),
            Some(n) => Err(NodeError::at(n, format!("`{key}` must be true or false, found {}", n.kind()))),
        }
    }
}
