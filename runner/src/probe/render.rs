//! The probe as a human reads it.

use super::Probe;
use crate::suite::names::GMEM_FLAGS;

/// The probe as a table for people.
pub fn render(p: &Probe) -> String {
    let mut s = String::new();
    s.push_str(&format!("kernel:          {}\n", p.kernel_release));
    s.push_str(&format!("cpu vendor:      {}\n", p.cpu_vendor));
    s.push_str(&format!("virtualization:  {} ({})\n", p.virt, p.virt_detail));
    s.push_str(&format!("numa nodes:      {}\n", p.numa_nodes));
    if let Some(e) = &p.kvm_error {
        s.push_str(&format!("/dev/kvm:        UNUSABLE: {e}\n"));
        return s;
    }
    s.push_str(&format!("KVM API version: {}\n", p.api_version.map_or("?".into(), |v| v.to_string())));
    s.push_str("capabilities (KVM_CHECK_EXTENSION)   on /dev/kvm   on a default VM\n");
    for (name, v) in &p.caps_system {
        let vm = p.caps_vm.get(name).copied().unwrap_or(0);
        s.push_str(&format!("  KVM_CAP_{name:<28} {v:>#10x}   {vm:>#10x}\n"));
    }
    s.push_str("VM types           advertised  KVM_CREATE_VM  GUEST_MEMFD  GUEST_MEMFD_FLAGS\n");
    for t in &p.vm_types {
        s.push_str(&format!(
            "  {:<3} {:<13} {:<11} {:<14} {:<12} {}\n",
            t.value,
            t.name,
            if t.advertised { "yes" } else { "no" },
            t.create,
            t.guest_memfd.map_or("-".into(), |v| v.to_string()),
            t.gmem_flags.map_or("-".into(), |f| format!("{f:#x} ({})", GMEM_FLAGS.render(f)))
        ));
    }
    s
}
