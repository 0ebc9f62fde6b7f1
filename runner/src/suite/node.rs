//! A YAML document as a tree in which every node knows its line and column, so that every
//! later check (unknown step, bad errno, missing `ref`) can point at the exact spot.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub col: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Self {
        Node { value, loc }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// What the node is, for messages such as "expected a list, found a string".
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A compact rendering for ids and messages: `mmap+init_shared`, `4K`, `none`.
    pub fn render_compact(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => match u64::try_from(*i) {
                Ok(v) if v >= 4096 => crate::suite::names::render_size(v),
                _ => i.to_string(),
            },
            Value::Float(f) => f.to_string(),
            Value::Str(s) => s.clone(),
            Value::Seq(items) if items.is_empty() => "none".into(),
            Value::Seq(items) => items.iter().map(Node::render_compact).collect::<Vec<_>>().join("+"),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| format!("{}:{}", k.render_compact(), v.render_compact()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

struct Raw(Value);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(Value::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw(Value::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw(Value::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v).map(|v| Raw(Value::Int(v))).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(Value::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(Value::Str(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(node_of(item));
        }
        Ok(Raw(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((node_of(key), node_of(value)));
        }
        Ok(Raw(Value::Map(entries)))
    }
}

fn node_of(s: Spanned<Raw>) -> Node {
    let loc = Loc { line: s.referenced.line(), col: s.referenced.column() };
    Node::new(s.value.0, loc)
}

/// Parses YAML text into a located tree. On a syntax error returns the message and where.
pub fn parse(text: &str) -> Result<Node, (String, Option<Loc>)> {
    // YAML 1.2 core booleans only: `n`, `y`, `no`, `on` stay names.
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(root) => Ok(node_of(root)),
        Err(e) => {
            let loc = e.location().map(|l| Loc { line: l.line(), col: l.column() });
            let message = e.without_snippet().to_string();
            // The location goes in front as file:line:col; drop the copy inside the message.
            let message = match message.find(" at line ") {
                Some(i) if loc.is_some() => message[..i].to_string(),
                _ => message,
            };
            Err((message, loc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_their_position() {
        let root = parse("a: 1\nb:\n  - x\n  - [2, 0x10]\n").expect("valid yaml");
        let b = root.get("b").expect("b");
        let seq = b.as_seq().expect("seq");
        assert_eq!(seq[0].loc, Loc { line: 3, col: 5 });
        assert_eq!(seq[1].as_seq().map(|s| s[1].value.clone()), Some(Value::Int(16)));
    }

    #[test]
    fn only_yaml_1_2_booleans_are_booleans() {
        let root = parse("a: n\nb: true\nc: no\n").expect("valid yaml");
        assert_eq!(root.get("a").map(|n| n.value.clone()), Some(Value::Str("n".into())));
        assert_eq!(root.get("b").map(|n| n.value.clone()), Some(Value::Bool(true)));
        assert_eq!(root.get("c").map(|n| n.value.clone()), Some(Value::Str("no".into())));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed list");
        assert!(err.1.is_some(), "{err:?}");
    }
}
