//! What the target can do: kernel, KVM capabilities (asked on a VM fd where that answer counts),
//! VM types, guest_memfd flags per VM type, CPU vendor and the kind of virtualization.

mod gather;
mod host;
mod render;

pub use gather::gather;
pub use host::VirtKind;
pub use render::render;

use crate::kvm::uapi::vm_type_name;
use crate::suite::Requirement;
use crate::suite::names::GMEM_FLAGS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub kernel_release: String,
    /// Why /dev/kvm is unusable, if it is.
    pub kvm_error: Option<String>,
    pub api_version: Option<i32>,
    /// KVM_CHECK_EXTENSION on /dev/kvm, by capability name (negative: -errno).
    pub caps_system: BTreeMap<String, i64>,
    /// KVM_CHECK_EXTENSION on a default VM: the answer suites gate on.
    pub caps_vm: BTreeMap<String, i64>,
    pub vm_types: Vec<VmTypeProbe>,
    pub cpu_vendor: String,
    pub virt: VirtKind,
    pub virt_detail: String,
    pub numa_nodes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmTypeProbe {
    pub name: String,
    pub value: u64,
    /// Listed in KVM_CAP_VM_TYPES (type 0 is always offered).
    pub advertised: bool,
    /// KVM_CREATE_VM with this type: "ok" or the errno name.
    pub create: String,
    /// KVM_CAP_GUEST_MEMFD on a VM of this type.
    pub guest_memfd: Option<i64>,
    /// KVM_CAP_GUEST_MEMFD_FLAGS on a VM of this type.
    pub gmem_flags: Option<u64>,
}

impl Probe {
    fn vm_cap(&self, name: &str) -> i64 {
        self.caps_vm.get(name).copied().unwrap_or(0)
    }

    fn default_type(&self) -> Option<&VmTypeProbe> {
        self.vm_types.iter().find(|t| t.value == 0)
    }

    /// Ok if the target meets `req`; otherwise the reason, worded for a skip line.
    pub fn meets(&self, req: &Requirement) -> Result<(), String> {
        if let Some(e) = &self.kvm_error {
            return Err(format!("no usable /dev/kvm: {e}"));
        }
        let cap = |name: &str, what: &str| -> Result<(), String> {
            match self.vm_cap(name) {
                v if v > 0 => Ok(()),
                v => Err(format!("KVM_CAP_{name} is {v} on a default VM: {what}")),
            }
        };
        match req {
            Requirement::Kvm => Ok(()),
            Requirement::GuestMemfd => cap("GUEST_MEMFD", "no guest_memfd for default VMs"),
            Requirement::UserMemory2 => cap("USER_MEMORY2", "no KVM_SET_USER_MEMORY_REGION2"),
            Requirement::MemoryFaultInfo => cap("MEMORY_FAULT_INFO", "no KVM_EXIT_MEMORY_FAULT details"),
            Requirement::MemoryAttributes => cap("MEMORY_ATTRIBUTES", "no KVM_SET_MEMORY_ATTRIBUTES"),
            Requirement::PrivateAttribute => {
                if self.vm_cap("MEMORY_ATTRIBUTES") as u64 & crate::kvm::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "KVM_CAP_MEMORY_ATTRIBUTES is {:#x}: no PRIVATE attribute",
                        self.vm_cap("MEMORY_ATTRIBUTES")
                    ))
                }
            }
            Requirement::PreFault => cap("PRE_FAULT_MEMORY", "no KVM_PRE_FAULT_MEMORY"),
            Requirement::ExitHypercall => cap("EXIT_HYPERCALL", "no hypercall exits"),
            Requirement::MultiAddressSpace => match self.vm_cap("MULTI_ADDRESS_SPACE") {
                v if v > 1 => Ok(()),
                v => Err(format!("KVM_CAP_MULTI_ADDRESS_SPACE is {v}: one address space")),
            },
            Requirement::Arch(a) => {
                if a == std::env::consts::ARCH {
                    Ok(())
                } else {
                    Err(format!("this host is {}, the case is for {a}", std::env::consts::ARCH))
                }
            }
            Requirement::MultiNuma => {
                if self.numa_nodes > 1 {
                    Ok(())
                } else {
                    Err(format!("{} NUMA node(s): mempolicy has nothing to distinguish", self.numa_nodes))
                }
            }
            Requirement::VmType(t) => match self.vm_types.iter().find(|p| p.value == *t) {
                Some(p) if p.advertised && p.create == "ok" => Ok(()),
                Some(p) if p.advertised => {
                    Err(format!("VM type {} is advertised but KVM_CREATE_VM fails with {}", p.name, p.create))
                }
                _ => Err(format!("VM type {} is not in KVM_CAP_VM_TYPES", vm_type_name(*t))),
            },
            Requirement::GmemFlags(mask) => {
                let have = self.default_type().and_then(|t| t.gmem_flags).unwrap_or(0);
                if have & mask == *mask {
                    Ok(())
                } else {
                    Err(format!(
                        "guest_memfd flag {} not in KVM_CAP_GUEST_MEMFD_FLAGS ({}) of a default VM",
                        GMEM_FLAGS.render(*mask),
                        GMEM_FLAGS.render(have)
                    ))
                }
            }
        }
    }

    /// One line for reports: `6.18.44, software KVM; GUEST_MEMFD=1 GUEST_MEMFD_FLAGS=0x3 VM_TYPES=0x1`.
    pub fn fingerprint(&self) -> String {
        let caps: Vec<String> =
            ["GUEST_MEMFD", "GUEST_MEMFD_FLAGS", "VM_TYPES", "MEMORY_ATTRIBUTES", "PRE_FAULT_MEMORY"]
                .iter()
                .map(|c| format!("{c}={:#x}", self.vm_cap(c)))
                .collect();
        format!("{}, {} KVM; {}", self.kernel_release, self.virt, caps.join(" "))
    }
}

/// Serializes the probe for a child process (environment variable), and reads it back.
pub const PROBE_ENV: &str = "GMEMCONF_PROBE";

pub fn from_env() -> Option<Probe> {
    std::env::var(PROBE_ENV).ok().and_then(|s| serde_json::from_str(&s).ok())
}
