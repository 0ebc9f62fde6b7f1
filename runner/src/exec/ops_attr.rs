//! Steps on private memory: memory attributes, pre-faulting, VM capabilities to enable, and the
//! VMM's answer to a guest that asks for a conversion (KVM_HC_MAP_GPA_RANGE).

use super::observe::Observed;
use super::world::{CaseError, World};
use crate::kvm::Vm;
use crate::kvm::uapi::{self, MemoryAttributes, PreFaultMemory};
use crate::suite::expect::FieldVal;
use crate::suite::names::{EXIT_HYPERCALLS, MEMORY_ATTRIBUTES, render_size};

pub fn set_attributes(
    w: &World,
    vm_name: &str,
    gpa: u64,
    size: u64,
    attributes: u64,
    flags: u64,
) -> Result<Observed, CaseError> {
    let vm = w.vm(vm_name)?;
    let call = format!(
        "KVM_SET_MEMORY_ATTRIBUTES {{ address: {gpa:#x}, size: {}, attributes: {}, flags: {flags:#x} }}",
        render_size(size),
        render_attributes(attributes)
    );
    let r = vm.vm.set_memory_attributes_raw(&MemoryAttributes { address: gpa, size, attributes, flags });
    Ok(Observed::from_result(r, call))
}

/// KVM_PRE_FAULT_MEMORY once; `gpa` and `size` are what the kernel wrote back: the part of the
/// range it did not map (api.rst: "the input values are updated to point to the remaining
/// range"), on success and on failure alike.
pub fn pre_fault(w: &World, vcpu_name: &str, gpa: u64, size: u64, flags: u64) -> Result<Observed, CaseError> {
    let obj = w.vcpu(vcpu_name)?;
    let vcpu = obj.lock();
    let call = format!("KVM_PRE_FAULT_MEMORY {{ gpa: {gpa:#x}, size: {}, flags: {flags:#x} }}", render_size(size));
    let mut range = PreFaultMemory { gpa, size, flags, ..Default::default() };
    let r = vcpu.pre_fault_memory_raw(&mut range);
    let mut obs = Observed::from_rc(r.map(i64::from), call);
    if let Ok(v) = r {
        obs = obs.field("value", FieldVal::Int(v.into()));
    }
    // api.rst KVM_PRE_FAULT_MEMORY: 0 once a page is processed, with gpa/size moved to the rest
    // of the range; an error processed nothing, so the range comes back as it went in.
    let consistent = match r {
        Ok(_) => range.size < size && range.gpa == gpa.wrapping_add(size - range.size),
        Err(_) => range.size == size && range.gpa == gpa,
    };
    Ok(obs
        .field("gpa", FieldVal::Int(range.gpa.into()))
        .field("size", FieldVal::Int(range.size.into()))
        .field("remainder_consistent", FieldVal::Bool(consistent)))
}

pub fn enable_cap(w: &World, vm_name: &str, cap: u32, flags: u32, args: [u64; 4]) -> Result<Observed, CaseError> {
    let vm = w.vm(vm_name)?;
    let cap_name = uapi::PROBED_CAPS.iter().find(|(_, c)| *c == cap).map_or("?", |(n, _)| *n);
    let first =
        if cap == uapi::KVM_CAP_EXIT_HYPERCALL { EXIT_HYPERCALLS.render(args[0]) } else { format!("{:#x}", args[0]) };
    let call = format!(
        "KVM_ENABLE_CAP {{ cap: {cap_name} ({cap}), flags: {flags:#x}, args: [{first}, {:#x}, {:#x}, {:#x}] }}",
        args[1], args[2], args[3]
    );
    Ok(Observed::from_result(vm.vm.enable_cap_raw(cap, flags, args), call))
}

fn render_attributes(attributes: u64) -> String {
    if attributes == 0 { "none".to_string() } else { MEMORY_ATTRIBUTES.render(attributes) }
}

/// The VMM's answer to guest hypercalls during one guest step, as a VMM does it
/// (x86/private_mem_conversions_test.c handle_exit_hypercall; api.rst KVM_CAP_EXIT_HYPERCALL):
/// KVM_HC_MAP_GPA_RANGE converts `[gpa, gpa + npages * 4K)` with KVM_SET_MEMORY_ATTRIBUTES,
/// private when the attributes ask for encrypted, and returns 0 or the ioctl's -errno.
pub struct Conversions<'a> {
    vm: Option<&'a Vm>,
    /// What each hypercall asked and got, for the step's report.
    pub log: Vec<String>,
}

impl<'a> Conversions<'a> {
    pub fn new(vm: Option<&'a Vm>) -> Conversions<'a> {
        Conversions { vm, log: Vec::new() }
    }

    pub fn answer(&mut self, nr: u64, args: &[u64; 6]) -> u64 {
        let refuse = |errno: u64| errno.wrapping_neg();
        if nr != uapi::KVM_HC_MAP_GPA_RANGE {
            self.log.push(format!("hypercall {nr} refused with -KVM_ENOSYS"));
            return refuse(uapi::KVM_ENOSYS);
        }
        let (gpa, npages, attrs) = (args[0], args[1], args[2]);
        let private = attrs & uapi::KVM_MAP_GPA_RANGE_ENCRYPTED != 0;
        let to = if private { "private" } else { "shared" };
        let Some(size) = npages.checked_mul(4096) else {
            self.log.push(format!("MAP_GPA_RANGE gpa {gpa:#x} npages {npages:#x}: size overflows; -EINVAL"));
            return refuse(libc::EINVAL as u64);
        };
        let Some(vm) = self.vm else {
            self.log.push(format!("MAP_GPA_RANGE [{gpa:#x}, +{size:#x}) to {to}: the VM's fd is closed; -EBADF"));
            return refuse(libc::EBADF as u64);
        };
        let attributes = if private { uapi::KVM_MEMORY_ATTRIBUTE_PRIVATE } else { 0 };
        let r = vm.set_memory_attributes_raw(&MemoryAttributes { address: gpa, size, attributes, flags: 0 });
        self.log.push(format!(
            "MAP_GPA_RANGE [{gpa:#x}, +{size:#x}) to {to}: KVM_SET_MEMORY_ATTRIBUTES {}",
            r.map_or_else(|e| format!("failed with {e}"), |_| "succeeded".into())
        ));
        match r {
            Ok(()) => 0,
            Err(e) => refuse(e as i32 as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_refuses_what_it_cannot_convert() {
        let mut vmm = Conversions::new(None);
        assert_eq!(vmm.answer(11, &[0; 6]), uapi::KVM_ENOSYS.wrapping_neg(), "only MAP_GPA_RANGE is answered");
        let overflow = [0x1000, u64::MAX, uapi::KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0];
        assert_eq!(vmm.answer(uapi::KVM_HC_MAP_GPA_RANGE, &overflow) as i64, -(libc::EINVAL as i64));
        let fine = [0x1000, 1, uapi::KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0];
        assert_eq!(
            vmm.answer(uapi::KVM_HC_MAP_GPA_RANGE, &fine) as i64,
            -(libc::EBADF as i64),
            "no VM fd to convert with"
        );
        assert_eq!(vmm.log.len(), 3);
        assert!(vmm.log[2].contains("[0x1000, +0x1000) to private"), "{}", vmm.log[2]);
    }
}
