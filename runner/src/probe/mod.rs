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
    /// KVM_CHECK_EXTENSION on a default VM (the same answers as `vm_types`' default entry).
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
    /// KVM_CHECK_EXTENSION on a VM of this type, by capability name (negative: -errno); empty
    /// when the type cannot be created.
    #[serde(default)]
    pub caps: BTreeMap<String, i64>,
}

impl VmTypeProbe {
    pub fn creates(&self) -> bool {
        self.create == "ok"
    }

    /// The answer a VM of this type gave for capability `name` (0 when not asked or failed).
    pub fn cap(&self, name: &str) -> i64 {
        self.caps.get(name).copied().unwrap_or(0).max(0)
    }

    /// KVM_CAP_GUEST_MEMFD_FLAGS of this type, as the bit mask it is.
    pub fn gmem_flags(&self) -> u64 {
        self.cap("GUEST_MEMFD_FLAGS") as u32 as u64
    }
}

impl Probe {
    /// Whether some VM type here has guest_memfd and the private memory attribute: what the
    /// conversion suite needs, and what a test kernel from `guest-images/` provides.
    pub fn has_private_memory(&self) -> bool {
        self.kvm_error.is_none()
            && self.vm_types.iter().any(|t| {
                [Requirement::GuestMemfd, Requirement::PrivateAttribute]
                    .iter()
                    .all(|req| self.meets_on_type(req, t.value).is_ok())
            })
    }

    fn vm_cap(&self, name: &str) -> i64 {
        self.caps_vm.get(name).copied().unwrap_or(0)
    }

    /// Ok if the target meets `req` on a default VM; otherwise the reason, worded for a skip line.
    pub fn meets(&self, req: &Requirement) -> Result<(), String> {
        self.meets_on(req, &[0])
    }

    /// Ok if the target meets `req` where the case needs it: a capability that KVM answers per
    /// VM (`Requirement::is_per_vm_type`) must hold on at least one of `vm_types`; the others are
    /// facts about the target. Otherwise the reason, naming each VM type that lacks it.
    pub fn meets_on(&self, req: &Requirement, vm_types: &[u64]) -> Result<(), String> {
        if let Some(e) = &self.kvm_error {
            return Err(format!("no usable /dev/kvm: {e}"));
        }
        if !req.is_per_vm_type() {
            return self.meets_on_target(req);
        }
        let types: &[u64] = if vm_types.is_empty() { &[0] } else { vm_types };
        let mut why = Vec::new();
        for t in types {
            match self.meets_on_type(req, *t) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(e),
            }
        }
        Err(why.join("; "))
    }

    /// A per-VM capability on a VM of type `t`.
    fn meets_on_type(&self, req: &Requirement, t: u64) -> Result<(), String> {
        let a = a_or_an(&vm_type_name(t));
        let probed = match self.vm_types.iter().find(|p| p.value == t) {
            Some(p) if p.creates() => p,
            Some(p) => return Err(format!("{a} VM cannot be created here (KVM_CREATE_VM: {})", p.create)),
            None => return Err(format!("{a} VM was not probed")),
        };
        let cap = |name: &str, what: &str| -> Result<(), String> {
            match probed.cap(name) {
                v if v > 0 => Ok(()),
                v => Err(format!("KVM_CAP_{name} is {v} on {a} VM: {what}")),
            }
        };
        match req {
            Requirement::GuestMemfd => cap("GUEST_MEMFD", "no guest_memfd for this VM type"),
            Requirement::UserMemory2 => cap("USER_MEMORY2", "no KVM_SET_USER_MEMORY_REGION2"),
            Requirement::MemoryFaultInfo => cap("MEMORY_FAULT_INFO", "no KVM_EXIT_MEMORY_FAULT details"),
            Requirement::MemoryAttributes => cap("MEMORY_ATTRIBUTES", "no memory attributes for this VM type"),
            Requirement::PrivateAttribute => {
                let have = probed.cap("MEMORY_ATTRIBUTES") as u64;
                if have & crate::kvm::uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 {
                    Ok(())
                } else {
                    Err(format!("KVM_CAP_MEMORY_ATTRIBUTES is {have:#x} on {a} VM: no PRIVATE attribute"))
                }
            }
            Requirement::PreFault => cap("PRE_FAULT_MEMORY", "no KVM_PRE_FAULT_MEMORY"),
            Requirement::ExitHypercall => cap("EXIT_HYPERCALL", "no hypercall exits"),
            Requirement::MultiAddressSpace => match probed.cap("MULTI_ADDRESS_SPACE") {
                v if v > 1 => Ok(()),
                v => Err(format!("KVM_CAP_MULTI_ADDRESS_SPACE is {v} on {a} VM: one address space")),
            },
            Requirement::GmemFlags(mask) => {
                let have = probed.gmem_flags();
                if have & mask == *mask {
                    Ok(())
                } else {
                    Err(format!(
                        "guest_memfd flag {} not in KVM_CAP_GUEST_MEMFD_FLAGS ({}) of {a} VM",
                        GMEM_FLAGS.render(*mask),
                        GMEM_FLAGS.render(have)
                    ))
                }
            }
            other => self.meets_on_target(other),
        }
    }

    /// A requirement that does not depend on a VM's type.
    fn meets_on_target(&self, req: &Requirement) -> Result<(), String> {
        match req {
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
                Some(p) if p.advertised && p.creates() => Ok(()),
                Some(p) if p.advertised => {
                    Err(format!("VM type {} is advertised but KVM_CREATE_VM fails with {}", p.name, p.create))
                }
                _ => Err(format!("VM type {} is not in KVM_CAP_VM_TYPES", vm_type_name(*t))),
            },
            // Kvm, and per-VM capabilities asked without a type.
            _ => Ok(()),
        }
    }

    /// One line for reports: `6.18.44, software KVM; GUEST_MEMFD=0x1 GUEST_MEMFD_FLAGS=0x3 VM_TYPES=0x1 ...`,
    /// then, for each other VM type that can be created, what differs from a default VM.
    pub fn fingerprint(&self) -> String {
        const SHOWN: &[&str] =
            &["GUEST_MEMFD", "GUEST_MEMFD_FLAGS", "VM_TYPES", "MEMORY_ATTRIBUTES", "PRE_FAULT_MEMORY"];
        let caps: Vec<String> = SHOWN.iter().map(|c| format!("{c}={:#x}", self.vm_cap(c))).collect();
        let mut s = format!("{}, {} KVM; {}", self.kernel_release, self.virt, caps.join(" "));
        for t in self.vm_types.iter().filter(|t| t.value != 0 && t.creates()) {
            let differs: Vec<String> = SHOWN
                .iter()
                .filter(|c| t.cap(c) != self.vm_cap(c).max(0))
                .map(|c| format!("{c}={:#x}", t.cap(c)))
                .collect();
            if !differs.is_empty() {
                s.push_str(&format!("; {}: {}", t.name, differs.join(" ")));
            }
        }
        s
    }
}

/// `a default`, `an sev`: VM type names read in skip reasons.
fn a_or_an(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) || name.starts_with("sev") || name.starts_with("snp") {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// Serializes the probe for a child process (environment variable), and reads it back.
pub const PROBE_ENV: &str = "GMEMCONF_PROBE";

pub fn from_env() -> Option<Probe> {
    std::env::var(PROBE_ENV).ok().and_then(|s| serde_json::from_str(&s).ok())
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
