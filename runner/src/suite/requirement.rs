//! The closed table of capability names that `requires:` and `if:` may use. Each is decided by
//! the probe; an unknown name is a load error.

use super::error::{NResult, NodeError, unknown_name_help};
use super::names::GMEM_FLAGS;
use super::node::Node;
use crate::kvm::uapi::VM_TYPES;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// /dev/kvm opens and a default VM can be created.
    Kvm,
    /// KVM_CAP_GUEST_MEMFD on a default VM.
    GuestMemfd,
    UserMemory2,
    MemoryFaultInfo,
    MemoryAttributes,
    /// KVM_CAP_MEMORY_ATTRIBUTES includes KVM_MEMORY_ATTRIBUTE_PRIVATE.
    PrivateAttribute,
    PreFault,
    ExitHypercall,
    /// The VM type is offered (KVM_CAP_VM_TYPES) and creates.
    VmType(u64),
    /// KVM_CAP_GUEST_MEMFD_FLAGS on a default VM includes these bits.
    GmemFlags(u64),
    /// More than one NUMA node with memory.
    MultiNuma,
    /// KVM_CAP_MULTI_ADDRESS_SPACE is more than 1 (x86 SMM: memslots in address space 1).
    MultiAddressSpace,
    /// The host architecture (`std::env::consts::ARCH`: x86_64, aarch64, ...).
    Arch(String),
}

impl Requirement {
    /// Whether KVM answers this per VM (KVM_CHECK_EXTENSION on a VM fd), so that it is judged on
    /// the type of the VM a case or step uses; the others are facts about the whole target.
    pub fn is_per_vm_type(&self) -> bool {
        match self {
            Requirement::GuestMemfd
            | Requirement::UserMemory2
            | Requirement::MemoryFaultInfo
            | Requirement::MemoryAttributes
            | Requirement::PrivateAttribute
            | Requirement::PreFault
            | Requirement::ExitHypercall
            | Requirement::GmemFlags(_)
            | Requirement::MultiAddressSpace => true,
            Requirement::Kvm | Requirement::VmType(_) | Requirement::MultiNuma | Requirement::Arch(_) => false,
        }
    }

    /// The names a suite may write, for help texts (`gmem_flag_bit.N` stands for 0..63).
    pub fn known_names() -> Vec<String> {
        let mut names: Vec<String> = [
            "kvm",
            "guest_memfd",
            "user_memory2",
            "memory_fault_info",
            "memory_attributes",
            "memory_attributes.private",
            "pre_fault",
            "exit_hypercall",
            "numa.multi",
            "multi_address_space",
            "arch.x86_64",
            "arch.aarch64",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        names.extend(VM_TYPES.iter().map(|(n, _)| format!("vm_type.{n}")));
        names.extend(GMEM_FLAGS.bits.iter().map(|(n, _)| format!("gmem_flag.{n}")));
        names.push("gmem_flag_bit.N".into());
        names
    }

    pub fn parse_name(name: &str) -> Option<Requirement> {
        Some(match name {
            "kvm" => Requirement::Kvm,
            "guest_memfd" => Requirement::GuestMemfd,
            "user_memory2" => Requirement::UserMemory2,
            "memory_fault_info" => Requirement::MemoryFaultInfo,
            "memory_attributes" => Requirement::MemoryAttributes,
            "memory_attributes.private" => Requirement::PrivateAttribute,
            "pre_fault" => Requirement::PreFault,
            "exit_hypercall" => Requirement::ExitHypercall,
            "numa.multi" => Requirement::MultiNuma,
            "multi_address_space" => Requirement::MultiAddressSpace,
            _ => {
                if let Some(arch) = name.strip_prefix("arch.") {
                    if !["x86_64", "aarch64", "riscv64", "s390x", "powerpc64", "loongarch64"].contains(&arch) {
                        return None;
                    }
                    Requirement::Arch(arch.to_string())
                } else if let Some(t) = name.strip_prefix("vm_type.") {
                    let (_, v) = VM_TYPES.iter().find(|(n, _)| *n == t)?;
                    Requirement::VmType(*v)
                } else if let Some(f) = name.strip_prefix("gmem_flag.") {
                    Requirement::GmemFlags(GMEM_FLAGS.bit(f)?)
                } else if let Some(b) = name.strip_prefix("gmem_flag_bit.") {
                    let bit: u32 = b.parse().ok().filter(|b| *b < 64)?;
                    Requirement::GmemFlags(1u64 << bit)
                } else {
                    return None;
                }
            }
        })
    }

    pub fn parse(node: &Node) -> NResult<Requirement> {
        let name = node
            .as_str()
            .ok_or_else(|| NodeError::at(node, format!("a requirement is a capability name, found {}", node.kind())))?;
        Requirement::parse_name(name).ok_or_else(|| {
            let known = Requirement::known_names();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            NodeError::at(node, format!("unknown capability `{name}`")).help(unknown_name_help(name, &known))
        })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Kvm => write!(f, "kvm"),
            Requirement::GuestMemfd => write!(f, "guest_memfd"),
            Requirement::UserMemory2 => write!(f, "user_memory2"),
            Requirement::MemoryFaultInfo => write!(f, "memory_fault_info"),
            Requirement::MemoryAttributes => write!(f, "memory_attributes"),
            Requirement::PrivateAttribute => write!(f, "memory_attributes.private"),
            Requirement::PreFault => write!(f, "pre_fault"),
            Requirement::ExitHypercall => write!(f, "exit_hypercall"),
            Requirement::MultiNuma => write!(f, "numa.multi"),
            Requirement::MultiAddressSpace => write!(f, "multi_address_space"),
            Requirement::Arch(a) => write!(f, "arch.{a}"),
            Requirement::VmType(t) => write!(f, "vm_type.{}", crate::kvm::uapi::vm_type_name(*t)),
            Requirement::GmemFlags(mask) => {
                let named = GMEM_FLAGS.render(*mask);
                if named.starts_with("0x") {
                    write!(f, "gmem_flag_bit.{}", mask.trailing_zeros())
                } else {
                    write!(f, "gmem_flag.{named}")
                }
            }
        }
    }
}

/// A requirement of a case together with the VM types it is judged on: the type of the VM the
/// step that implies it acts on, or every type the case creates (met when one of them has it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Need {
    pub what: Requirement,
    /// VM types (KVM_CREATE_VM numbers), never empty; ignored unless `what.is_per_vm_type()`.
    pub vm_types: Vec<u64>,
}

impl fmt::Display for Need {
    /// `guest_memfd`, or `memory_attributes.private (sw_protected VM)` when judged on a VM type
    /// other than the default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if self.what.is_per_vm_type() && self.vm_types != [0] {
            let names: Vec<String> = self.vm_types.iter().map(|t| crate::kvm::uapi::vm_type_name(*t)).collect();
            write!(f, " ({} VM)", names.join(" or "))?;
        }
        Ok(())
    }
}
