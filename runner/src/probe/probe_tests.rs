//! Judging requirements on the VM types a case uses.

use super::*;
use crate::kvm::uapi::{GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP};

/// A 7.3-like target: default VMs have guest_memfd with MMAP|INIT_SHARED but no attributes;
/// sw_protected VMs have PRIVATE and MMAP only; sev is not offered.
fn probe() -> Probe {
    let caps = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
        pairs.iter().map(|(n, v)| ((*n).to_string(), *v)).collect()
    };
    let default =
        caps(&[("GUEST_MEMFD", 1), ("GUEST_MEMFD_FLAGS", 3), ("MEMORY_ATTRIBUTES", 0), ("PRE_FAULT_MEMORY", 1)]);
    let sw = caps(&[("GUEST_MEMFD", 1), ("GUEST_MEMFD_FLAGS", 1), ("MEMORY_ATTRIBUTES", 8), ("PRE_FAULT_MEMORY", 1)]);
    let ty = |name: &str, value: u64, create: &str, caps: BTreeMap<String, i64>| VmTypeProbe {
        name: name.into(),
        value,
        advertised: create == "ok",
        create: create.into(),
        caps,
    };
    Probe {
        kernel_release: "7.3.4".into(),
        kvm_error: None,
        api_version: Some(12),
        caps_system: BTreeMap::new(),
        caps_vm: default.clone(),
        vm_types: vec![
            ty("default", 0, "ok", default),
            ty("sw_protected", 1, "ok", sw),
            ty("sev", 2, "EINVAL", BTreeMap::new()),
        ],
        cpu_vendor: "AuthenticAMD".into(),
        virt: VirtKind::Nested,
        virt_detail: String::new(),
        numa_nodes: 1,
    }
}

#[test]
fn a_per_vm_capability_is_asked_of_the_type_the_case_uses() {
    let p = probe();
    assert_eq!(
        p.meets_on(&Requirement::PrivateAttribute, &[0]),
        Err("KVM_CAP_MEMORY_ATTRIBUTES is 0x0 on a default VM: no PRIVATE attribute".into())
    );
    assert_eq!(p.meets_on(&Requirement::PrivateAttribute, &[1]), Ok(()));
    assert_eq!(p.meets_on(&Requirement::PrivateAttribute, &[0, 1]), Ok(()), "one of the case's types has it");
    assert!(p.meets(&Requirement::PrivateAttribute).is_err(), "meets() asks a default VM");
    assert_eq!(p.meets_on(&Requirement::MemoryAttributes, &[1]), Ok(()));
}

#[test]
fn guest_memfd_flags_are_those_of_the_type() {
    let p = probe();
    let init_shared = Requirement::GmemFlags(GUEST_MEMFD_FLAG_INIT_SHARED);
    assert_eq!(p.meets_on(&init_shared, &[0]), Ok(()));
    assert_eq!(
        p.meets_on(&init_shared, &[1]),
        Err("guest_memfd flag init_shared not in KVM_CAP_GUEST_MEMFD_FLAGS (mmap) of a sw_protected VM".into())
    );
    assert_eq!(p.meets_on(&Requirement::GmemFlags(GUEST_MEMFD_FLAG_MMAP), &[1]), Ok(()));
}

#[test]
fn every_lacking_type_is_named_and_an_uncreatable_type_says_so() {
    let p = probe();
    assert_eq!(
        p.meets_on(&Requirement::PrivateAttribute, &[0, 2]),
        Err("KVM_CAP_MEMORY_ATTRIBUTES is 0x0 on a default VM: no PRIVATE attribute; \
             an sev VM cannot be created here (KVM_CREATE_VM: EINVAL)"
            .into())
    );
}

#[test]
fn target_facts_ignore_the_vm_types() {
    let p = probe();
    assert_eq!(p.meets_on(&Requirement::VmType(1), &[0]), Ok(()));
    assert_eq!(p.meets_on(&Requirement::VmType(2), &[2]), Err("VM type sev is not in KVM_CAP_VM_TYPES".into()));
    assert_eq!(p.meets_on(&Requirement::Kvm, &[5]), Ok(()));
}

#[test]
fn the_fingerprint_shows_what_other_types_change() {
    let f = probe().fingerprint();
    assert!(f.ends_with("; sw_protected: GUEST_MEMFD_FLAGS=0x1 MEMORY_ATTRIBUTES=0x8"), "{f}");
}
