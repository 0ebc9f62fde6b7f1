//! The machine under /dev/kvm: CPU vendor, what kind of virtualization KVM has, NUMA nodes.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VirtKind {
    /// VMX or SVM on bare metal.
    Hardware,
    /// VMX or SVM offered by a hypervisor below (nested virtualization, or QEMU TCG emulating it).
    Nested,
    /// /dev/kvm without VMX or SVM: a software KVM (e.g. kvm_pvm) that shadows the guest's pages.
    Software,
    /// No usable /dev/kvm.
    None,
}

impl VirtKind {
    pub const NAMES: &'static [&'static str] = &["hardware", "nested", "software", "none"];

    /// Case timeouts are written for hardware virtualization; slower kinds get more time.
    /// A software KVM exits to the host for guest memory accesses that hardware does not.
    pub fn timeout_scale(self) -> f64 {
        match self {
            VirtKind::Hardware | VirtKind::None => 1.0,
            VirtKind::Nested | VirtKind::Software => 2.0,
        }
    }
}

impl fmt::Display for VirtKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            VirtKind::Hardware => "hardware",
            VirtKind::Nested => "nested",
            VirtKind::Software => "software",
            VirtKind::None => "none",
        };
        f.write_str(s)
    }
}

pub fn cpu_vendor() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Classifies the virtualization under /dev/kvm from CPU flags and loaded KVM modules.
pub fn virt_kind(kvm_usable: bool) -> (VirtKind, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map(|f| f.trim_start_matches([' ', '\t', ':']).split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    let modules: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("kvm"))
                .collect()
        })
        .unwrap_or_default();
    let hw = if has("vmx") {
        Some("vmx")
    } else if has("svm") {
        Some("svm")
    } else {
        None
    };
    let detail = format!(
        "cpu flags: {}{}; modules: {}",
        hw.unwrap_or("no vmx/svm"),
        if has("hypervisor") { ", under a hypervisor" } else { "" },
        if modules.is_empty() { "none listed".to_string() } else { modules.join(" ") }
    );
    let kind = match (kvm_usable, hw, has("hypervisor")) {
        (false, _, _) => VirtKind::None,
        (true, None, _) => VirtKind::Software,
        (true, Some(_), true) => VirtKind::Nested,
        (true, Some(_), false) => VirtKind::Hardware,
    };
    (kind, detail)
}

pub fn numa_nodes() -> usize {
    std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].chars().all(|c| c.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_else(|_| "unknown".into())
}
