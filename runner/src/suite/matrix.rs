//! Matrix expansion: one case per combination of parameter values, with `$name` and `${name}`
//! substituted into the steps.

use super::error::{NResult, NodeError};
use super::names;
use super::node::{Node, Value};

/// One parameter and its values, in the order written.
pub struct Param {
    pub name: String,
    pub values: Vec<Node>,
    pub node: Node,
}

pub fn parse(matrix: &Node) -> NResult<Vec<Param>> {
    let entries = matrix.as_map().ok_or_else(|| {
        NodeError::at(matrix, format!("`matrix` must be a mapping of parameter to values, found {}", matrix.kind()))
            .help("write `matrix: { flags: [[], [mmap]] }`")
    })?;
    entries
        .iter()
        .map(|(k, v)| {
            let name = k
                .as_str()
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .ok_or_else(|| NodeError::at(k, "a matrix parameter is a name of letters, digits and `_`"))?
                .to_string();
            let values = match (&v.value, v.get("range")) {
                (Value::Seq(items), _) => items.clone(),
                (Value::Map(_), Some(range)) => expand_range(range)?,
                _ => {
                    return Err(NodeError::at(v, format!("the values of `{name}` must be a list, found {}", v.kind()))
                        .help("write `name: [a, b]` or `name: { range: [0, 63] }`"));
                }
            };
            if values.is_empty() {
                return Err(NodeError::at(v, format!("`{name}` has no values")).help("give at least one value"));
            }
            Ok(Param { name, values, node: k.clone() })
        })
        .collect()
}

fn expand_range(range: &Node) -> NResult<Vec<Node>> {
    let bounds = range.as_seq().filter(|s| s.len() == 2).ok_or_else(|| {
        NodeError::at(range, "`range` is `[first, last]`, both included").help("write `{ range: [0, 63] }`")
    })?;
    let (lo, hi) = (names::parse_i128(&bounds[0])?, names::parse_i128(&bounds[1])?);
    if hi < lo || hi - lo > 4096 {
        return Err(NodeError::at(range, format!("range [{lo}, {hi}] is empty or has more than 4096 values")));
    }
    Ok((lo..=hi).map(|i| Node::new(Value::Int(i), range.loc)).collect())
}

/// Every combination, in a stable order (the first parameter varies slowest).
pub fn combinations(params: &[Param]) -> Vec<Vec<(String, Node)>> {
    let mut out: Vec<Vec<(String, Node)>> = vec![Vec::new()];
    for p in params {
        out = out
            .into_iter()
            .flat_map(|combo| {
                p.values.iter().map(move |v| {
                    let mut c = combo.clone();
                    c.push((p.name.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// Replaces `$name` scalars by the value's node and `${name}` inside strings by its text.
/// Records which parameters were used.
pub fn substitute(node: &Node, combo: &[(String, Node)], used: &mut Vec<String>) -> NResult<Node> {
    Ok(match &node.value {
        Value::Str(s) if s.starts_with('$') && !s.starts_with("${") => {
            let name = &s[1..];
            let (_, value) = lookup(node, name, combo)?;
            used.push(name.to_string());
            value.clone()
        }
        Value::Str(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..]
                    .find('}')
                    .ok_or_else(|| NodeError::at(node, format!("unclosed `${{` in `{s}`")).help("write `${name}`"))?;
                let name = &rest[start + 2..start + end];
                let (_, value) = lookup(node, name, combo)?;
                used.push(name.to_string());
                out.push_str(&value.render_compact());
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            Node::new(Value::Str(out), node.loc)
        }
        Value::Seq(items) => {
            Node::new(Value::Seq(items.iter().map(|i| substitute(i, combo, used)).collect::<NResult<_>>()?), node.loc)
        }
        Value::Map(entries) => Node::new(
            Value::Map(
                entries.iter().map(|(k, v)| Ok((k.clone(), substitute(v, combo, used)?))).collect::<NResult<_>>()?,
            ),
            node.loc,
        ),
        _ => node.clone(),
    })
}

fn lookup<'a>(node: &Node, name: &str, combo: &'a [(String, Node)]) -> NResult<&'a (String, Node)> {
    combo.iter().find(|(n, _)| n == name).ok_or_else(|| {
        let hint = if combo.is_empty() {
            format!("add `matrix: {{ {name}: [...] }}` to the case")
        } else {
            let names: Vec<&str> = combo.iter().map(|(n, _)| n.as_str()).collect();
            format!("add `{name}: [...]` under the case's `matrix:` (it has: {})", names.join(", "))
        };
        NodeError::at(node, format!("`${name}` has no matrix entry")).help(hint)
    })
}
