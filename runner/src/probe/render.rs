//! The probe as a human reads it.

use super::Probe;
use crate::suite::names::GMEM_FLAGS;

/// The probe as a table for people: every capability on /dev/kvm and on a VM of each type that
/// can be created.
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
    let types: Vec<_> = p.vm_types.iter().filter(|t| t.creates()).collect();
    s.push_str(&format!("{:<40} {:>12}", "capabilities (KVM_CHECK_EXTENSION)", "/dev/kvm"));
    for t in &types {
        s.push_str(&format!(" {:>12}", t.name));
    }
    s.push('\n');
    for (name, v) in &p.caps_system {
        s.push_str(&format!("  KVM_CAP_{name:<30} {v:>#12x}"));
        for t in &types {
            s.push_str(&format!(" {:>#12x}", t.caps.get(name).copied().unwrap_or(0)));
        }
        s.push('\n');
    }
    s.push_str("VM types           advertised  KVM_CREATE_VM  GUEST_MEMFD_FLAGS\n");
    for t in &p.vm_types {
        s.push_str(&format!(
            "  {:<3} {:<13} {:<11} {:<14} {}\n",
            t.value,
            t.name,
            if t.advertised { "yes" } else { "no" },
            t.create,
            if t.creates() {
                format!("{:#x} ({})", t.gmem_flags(), GMEM_FLAGS.render(t.gmem_flags()))
            } else {
                "-".into()
            }
        ));
    }
    s
}
