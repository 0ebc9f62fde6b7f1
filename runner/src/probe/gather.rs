//! Asks the kernel: every capability on /dev/kvm and on a VM of each type.

use super::host;
use super::{Probe, VmTypeProbe};
use crate::kvm::Kvm;
use crate::kvm::uapi::{KVM_CAP_GUEST_MEMFD, KVM_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_VM_TYPES, PROBED_CAPS, VM_TYPES};
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
    match kvm.try_create_vm(0) {
        Ok(vm) => {
            for (name, cap) in PROBED_CAPS {
                probe.caps_vm.insert((*name).to_string(), answer(vm.check_extension(*cap)));
            }
        }
        Err(e) => probe.kvm_error = Some(format!("cannot create a default VM: {e}")),
    }
    let advertised = probe.caps_system.get("VM_TYPES").copied().filter(|v| *v > 0).unwrap_or(1) as u64 | 1;
    for (name, value) in VM_TYPES {
        let mut t = VmTypeProbe {
            name: (*name).to_string(),
            value: *value,
            advertised: advertised & (1 << value) != 0,
            create: String::new(),
            guest_memfd: None,
            gmem_flags: None,
        };
        match kvm.create_vm_raw(*value) {
            Ok(vm) => {
                t.create = "ok".into();
                t.guest_memfd = Some(answer(vm.check_extension(KVM_CAP_GUEST_MEMFD)));
                t.gmem_flags = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS).ok().map(|v| v as u32 as u64);
            }
            Err(e) => t.create = errno_name(e).to_string(),
        }
        probe.vm_types.push(t);
    }
    let _ = KVM_CAP_VM_TYPES;
    probe
}
