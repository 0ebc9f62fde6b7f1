//! Asks the kernel: every capability on /dev/kvm and on a VM of each type.

use super::host;
use super::{Probe, VmTypeProbe};
use crate::kvm::Kvm;
use crate::kvm::Vm;
use crate::kvm::uapi::{PROBED_CAPS, VM_TYPES};
use crate::suite::names::errno_name;
use std::collections::BTreeMap;

fn answer(r: Result<i32, nix::errno::Errno>) -> i64 {
    match r {
        Ok(v) => v.into(),
        Err(e) => -(e as i64),
    }
}

pub fn gather() -> Probe {
    let kernel_release = host::kernel_release();
    let cpu_vendor = host::cpu_vendor();
    let numa_nodes = host::numa_nodes();
    let kvm = Kvm::open();
    let (virt, virt_detail) = host::virt_kind(kvm.is_ok());
    let mut probe = Probe {
        kernel_release,
        kvm_error: None,
        api_version: None,
        caps_system: BTreeMap::new(),
        caps_vm: BTreeMap::new(),
        vm_types: Vec::new(),
        cpu_vendor,
        virt,
        virt_detail,
        numa_nodes,
    };
    let kvm = match kvm {
        Ok(k) => k,
        Err(e) => {
            probe.kvm_error = Some(format!("{e} (is /dev/kvm there and readable by this user?)"));
            return probe;
        }
    };
    probe.api_version = kvm.api_version().ok();
    for (name, cap) in PROBED_CAPS {
        probe.caps_system.insert((*name).to_string(), answer(kvm.check_extension(*cap)));
    }
    let advertised = probe.caps_system.get("VM_TYPES").copied().filter(|v| *v > 0).unwrap_or(1) as u64 | 1;
    for (name, value) in VM_TYPES {
        let mut t = VmTypeProbe {
            name: (*name).to_string(),
            value: *value,
            advertised: advertised & (1 << value) != 0,
            create: String::new(),
            caps: BTreeMap::new(),
        };
        match kvm.create_vm_raw(*value) {
            Ok(vm) => {
                t.create = "ok".into();
                t.caps = vm_caps(&vm);
            }
            Err(e) => t.create = errno_name(e).to_string(),
        }
        probe.vm_types.push(t);
    }
    // The default VM's answers are the ones most suites gate on (a VM is slow to make under TCG:
    // the type loop's is reused).
    match probe.vm_types.iter().find(|t| t.value == 0) {
        Some(t) if t.create == "ok" => probe.caps_vm = t.caps.clone(),
        Some(t) => {
            probe.kvm_error = Some(format!("cannot create a default VM: KVM_CREATE_VM failed with {}", t.create))
        }
        None => {}
    }
    probe
}

/// Every probed capability as a VM of this type answers it.
fn vm_caps(vm: &Vm) -> BTreeMap<String, i64> {
    PROBED_CAPS.iter().map(|(name, cap)| ((*name).to_string(), answer(vm.check_extension(*cap)))).collect()
}
