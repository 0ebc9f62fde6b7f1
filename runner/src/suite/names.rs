//! Names a suite may use instead of numbers: errnos, signals, flag bits, sizes.

use super::error::{NResult, NodeError, unknown_name_help};
use super::node::{Node, Value};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::str::FromStr;

/// A named set of bits, e.g. guest_memfd creation flags.
#[derive(Debug)]
pub struct FlagTable {
    pub what: &'static str,
    pub bits: &'static [(&'static str, u64)],
}

impl FlagTable {
    pub fn names(&self) -> Vec<&'static str> {
        self.bits.iter().map(|(n, _)| *n).collect()
    }

    pub fn bit(&self, name: &str) -> Option<u64> {
        self.bits.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// Renders a mask as names, with any unnamed bits in hex: `mmap|init_shared|0x100`.
    pub fn render(&self, mask: u64) -> String {
        let mut parts = Vec::new();
        let mut rest = mask;
        for (name, bit) in self.bits {
            if *bit != 0 && rest & bit == *bit {
                parts.push((*name).to_string());
                rest &= !bit;
            }
        }
        if rest != 0 || parts.is_empty() {
            parts.push(format!("{rest:#x}"));
        }
        parts.join("|")
    }

    /// A flag value is a list of names and integers, a single name, or an integer mask.
    pub fn parse(&self, node: &Node) -> NResult<u64> {
        match &node.value {
            Value::Seq(items) => items.iter().try_fold(0u64, |acc, item| Ok(acc | self.parse(item)?)),
            Value::Str(s) => match (self.bit(s), parse_size_expr(s)) {
                (Some(bit), _) => Ok(bit),
                (None, Some(v)) => u64::try_from(v).map_err(|_| NodeError::at(node, format!("{v} is not a mask"))),
                (None, None) => Err(NodeError::at(node, format!("unknown {} `{s}`", self.what))
                    .help(format!("{}; or a raw mask such as `1<<63`", unknown_name_help(s, &self.names())))),
            },
            Value::Int(_) => parse_u64(node),
            Value::Null => Ok(0),
            _ => Err(NodeError::at(node, format!("{} must be a list of names, found {}", self.what, node.kind()))
                .help(format!("write e.g. `[{}]`", self.names().join(", ")))),
        }
    }
}

pub static GMEM_FLAGS: FlagTable =
    FlagTable { what: "guest_memfd flag", bits: &[("mmap", 1 << 0), ("init_shared", 1 << 1)] };

pub static MEMSLOT_FLAGS: FlagTable = FlagTable {
    what: "memslot flag",
    bits: &[("log_dirty_pages", 1 << 0), ("readonly", 1 << 1), ("guest_memfd", 1 << 2)],
};

pub static FALLOC_MODES: FlagTable = FlagTable {
    what: "fallocate mode",
    bits: &[
        ("allocate", 0),
        ("keep_size", 0x01),
        ("punch_hole", 0x02),
        ("no_hide_stale", 0x04),
        ("collapse_range", 0x08),
        ("zero_range", 0x10),
        ("insert_range", 0x20),
        ("unshare_range", 0x40),
        ("write_zeroes", 0x80),
    ],
};

pub static PROT: FlagTable =
    FlagTable { what: "protection", bits: &[("none", 0), ("read", 1), ("write", 2), ("exec", 4)] };

pub static MAP_FLAGS: FlagTable = FlagTable {
    what: "mmap flag",
    bits: &[
        ("shared", libc::MAP_SHARED as u64),
        ("private", libc::MAP_PRIVATE as u64),
        ("shared_validate", libc::MAP_SHARED_VALIDATE as u64),
        ("populate", libc::MAP_POPULATE as u64),
        ("noreserve", libc::MAP_NORESERVE as u64),
    ],
};

pub static SEALS: FlagTable = FlagTable {
    what: "seal",
    bits: &[("seal", 0x01), ("shrink", 0x02), ("grow", 0x04), ("write", 0x08), ("future_write", 0x10), ("exec", 0x20)],
};

pub static MEMORY_ATTRIBUTES: FlagTable = FlagTable { what: "memory attribute", bits: &[("private", 1 << 3)] };

/// The hypercalls KVM_CAP_EXIT_HYPERCALL can forward to userspace (bit n = hypercall nr n).
pub static EXIT_HYPERCALLS: FlagTable = FlagTable { what: "hypercall", bits: &[("map_gpa_range", 1 << 12)] };

pub static MEMORY_FAULT_FLAGS: FlagTable = FlagTable { what: "memory-fault flag", bits: &[("private", 1 << 3)] };

pub static WHENCE: FlagTable =
    FlagTable { what: "lseek whence", bits: &[("set", 0), ("cur", 1), ("end", 2), ("data", 3), ("hole", 4)] };

pub static MADVISE: FlagTable = FlagTable {
    what: "madvise advice",
    bits: &[
        ("normal", 0),
        ("willneed", 3),
        ("dontneed", 4),
        ("remove", 9),
        ("hugepage", 14),
        ("nohugepage", 15),
        ("populate_read", 22),
        ("populate_write", 23),
        ("collapse", 25),
    ],
};

pub static FCNTL_CMDS: FlagTable = FlagTable {
    what: "fcntl command",
    bits: &[
        ("getfd", libc::F_GETFD as u64),
        ("setfd", libc::F_SETFD as u64),
        ("getfl", libc::F_GETFL as u64),
        ("setfl", libc::F_SETFL as u64),
        ("getlease", libc::F_GETLEASE as u64),
        ("getpipe_sz", libc::F_GETPIPE_SZ as u64),
    ],
};

/// Names every errno this libc knows, in number order.
pub fn errno_names() -> Vec<&'static str> {
    (1..200).map(Errno::from_raw).filter(|e| *e != Errno::UnknownErrno).map(errno_name).collect()
}

pub fn errno_name(e: Errno) -> &'static str {
    // nix's Debug for Errno is the symbolic name; leak-free because the set is finite.
    static NAMES: std::sync::OnceLock<Vec<(i32, &'static str)>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (1..200)
            .map(Errno::from_raw)
            .filter(|e| *e != Errno::UnknownErrno)
            .map(|e| (e as i32, &*Box::leak(format!("{e:?}").into_boxed_str())))
            .collect()
    });
    names.iter().find(|(n, _)| *n == e as i32).map(|(_, s)| *s).unwrap_or("UNKNOWN")
}

pub fn parse_errno(node: &Node) -> NResult<Errno> {
    let name = node
        .as_str()
        .ok_or_else(|| NodeError::at(node, format!("an errno is a name such as EINVAL, found {}", node.kind())))?;
    (1..200).map(Errno::from_raw).find(|e| *e != Errno::UnknownErrno && errno_name(*e) == name).ok_or_else(|| {
        let known = errno_names();
        let help = match super::error::suggest(name, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? errnos are written as in errno(3): EINVAL, EFAULT, ..."),
            None => "errnos are written as in errno(3): EINVAL, EFAULT, ENOSPC, ...".into(),
        };
        NodeError::at(node, format!("unknown errno `{name}`")).help(help)
    })
}

pub fn parse_signal(node: &Node) -> NResult<Signal> {
    let name = node.as_str().unwrap_or_default();
    Signal::from_str(name).map_err(|_| {
        NodeError::at(node, format!("unknown signal `{}`", node.render_compact()))
            .help("signals are written as in signal(7): SIGBUS, SIGSEGV, ...")
    })
}

/// Sizes and offsets: integers, hex, `4K`, `2M`, `1G`, `1T`, and sums such as `2M-4K` or `4K+1`.
pub fn parse_i128(node: &Node) -> NResult<i128> {
    match &node.value {
        Value::Int(i) => Ok(*i),
        Value::Str(s) => parse_size_expr(s).ok_or_else(|| {
            NodeError::at(node, format!("bad size `{s}`"))
                .help("write a number (4096, 0x1000) or a size (4K, 2M, 1G), optionally summed: 2M-4K, 4K+1")
        }),
        _ => Err(NodeError::at(node, format!("expected a number or size, found {}", node.kind()))
            .help("write a number (4096, 0x1000) or a size (4K, 2M, 1G)")),
    }
}

pub fn parse_u64(node: &Node) -> NResult<u64> {
    let v = parse_i128(node)?;
    u64::try_from(v).map_err(|_| {
        NodeError::at(node, format!("{v} does not fit in an unsigned 64-bit field"))
            .help("this field is a u64; negative values go in signed fields such as offsets of lseek or fallocate")
    })
}

pub fn parse_i64(node: &Node) -> NResult<i64> {
    let v = parse_i128(node)?;
    i64::try_from(v).map_err(|_| {
        NodeError::at(node, format!("{v} does not fit in a signed 64-bit field"))
            .help("loff_t fields are signed 64-bit: use at most 0x7fffffffffffffff")
    })
}

fn parse_size_expr(s: &str) -> Option<i128> {
    let s = s.trim();
    let mut total: i128 = 0;
    let mut sign: i128 = 1;
    let mut term = String::new();
    let flush = |term: &mut String, total: &mut i128, sign: i128| -> Option<()> {
        let t = term.trim();
        if t.is_empty() {
            return None;
        }
        *total = total.checked_add(sign.checked_mul(parse_term(t)?)?)?;
        term.clear();
        Some(())
    };
    for (i, c) in s.char_indices() {
        if (c == '+' || c == '-') && i > 0 && !term.trim().is_empty() {
            flush(&mut term, &mut total, sign)?;
            sign = if c == '-' { -1 } else { 1 };
        } else if c == '-' && term.trim().is_empty() {
            sign = -sign;
        } else {
            term.push(c);
        }
    }
    flush(&mut term, &mut total, sign)?;
    Some(total)
}

fn parse_term(t: &str) -> Option<i128> {
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i128::from_str_radix(&hex.replace('_', ""), 16).ok();
    }
    if let Some(shift) = t.strip_prefix("1<<") {
        let n: u32 = shift.trim().parse().ok()?;
        return 1i128.checked_shl(n);
    }
    let (digits, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1i128 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    digits.trim().replace('_', "").parse::<i128>().ok()?.checked_mul(mult)
}

/// Renders a size the way suites write it, for messages: `4K`, `2M`, `0x1001`.
pub fn render_size(v: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if v != 0 && v.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    format!("{v:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::node::Loc;

    fn s(text: &str) -> Node {
        Node::new(Value::Str(text.into()), Loc::default())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_i128(&s("4K")).ok(), Some(4096));
        assert_eq!(parse_i128(&s("2M-4K")).ok(), Some(2 * 1024 * 1024 - 4096));
        assert_eq!(parse_i128(&s("4K+1")).ok(), Some(4097));
        assert_eq!(parse_i128(&s("-4K")).ok(), Some(-4096));
        assert_eq!(parse_i128(&s("0x1000")).ok(), Some(4096));
        assert_eq!(parse_i128(&s("1<<63")).ok(), Some(1 << 63));
        assert!(parse_i128(&s("4Q")).is_err());
        assert!(parse_u64(&s("-1")).is_err());
    }

    #[test]
    fn errnos_by_name() {
        assert_eq!(parse_errno(&s("EINVAL")).ok(), Some(Errno::EINVAL));
        let err = parse_errno(&s("EINVL")).expect_err("misspelt");
        assert!(err.help.unwrap_or_default().contains("EINVAL"));
    }

    #[test]
    fn flags_render_and_parse() {
        assert_eq!(GMEM_FLAGS.render(3), "mmap|init_shared");
        assert_eq!(GMEM_FLAGS.render(0x100), "0x100");
        let list = Node::new(Value::Seq(vec![s("mmap"), s("init_shared")]), Loc::default());
        assert_eq!(GMEM_FLAGS.parse(&list).ok(), Some(3));
        assert!(GMEM_FLAGS.parse(&s("mmapp")).is_err());
    }
}
