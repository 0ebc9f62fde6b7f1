//! uAPI numbers that kvm-bindings 0.14 lacks or that gmemconf issues itself, in one place.
//! Source: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (see ../shared/reference/uapi.md).

pub const KVMIO: u64 = 0xAE;

pub const KVM_GET_API_VERSION: u64 = 0xAE00;
pub const KVM_CREATE_VM: u64 = 0xAE01;
pub const KVM_CHECK_EXTENSION: u64 = 0xAE03;
pub const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_AE46;
pub const KVM_SET_USER_MEMORY_REGION2: u64 = 0x40A0_AE49;
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 = 0x4020_AED2;
pub const KVM_CREATE_GUEST_MEMFD: u64 = 0xC040_AED4;
pub const KVM_PRE_FAULT_MEMORY: u64 = 0xC040_AED5;
pub const KVM_ENABLE_CAP: u64 = 0x4068_AEA3;
pub const KVM_GET_STATS_FD: u64 = 0xAECE;

pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
pub const KVM_CAP_USER_MEMORY2: u32 = 231;
pub const KVM_CAP_MEMORY_FAULT_INFO: u32 = 232;
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
pub const KVM_CAP_GUEST_MEMFD: u32 = 234;
pub const KVM_CAP_VM_TYPES: u32 = 235;
pub const KVM_CAP_PRE_FAULT_MEMORY: u32 = 236;
pub const KVM_CAP_GUEST_MEMFD_FLAGS: u32 = 244;
pub const KVM_CAP_NR_MEMSLOTS: u32 = 10;
pub const KVM_CAP_MULTI_ADDRESS_SPACE: u32 = 118;

/// Every capability the probe reports, by the name suites and reports use.
pub const PROBED_CAPS: &[(&str, u32)] = &[
    ("NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS),
    ("MULTI_ADDRESS_SPACE", KVM_CAP_MULTI_ADDRESS_SPACE),
    ("EXIT_HYPERCALL", KVM_CAP_EXIT_HYPERCALL),
    ("USER_MEMORY2", KVM_CAP_USER_MEMORY2),
    ("MEMORY_FAULT_INFO", KVM_CAP_MEMORY_FAULT_INFO),
    ("MEMORY_ATTRIBUTES", KVM_CAP_MEMORY_ATTRIBUTES),
    ("GUEST_MEMFD", KVM_CAP_GUEST_MEMFD),
    ("VM_TYPES", KVM_CAP_VM_TYPES),
    ("PRE_FAULT_MEMORY", KVM_CAP_PRE_FAULT_MEMORY),
    ("GUEST_MEMFD_FLAGS", KVM_CAP_GUEST_MEMFD_FLAGS),
];

pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
pub const KVM_MEM_READONLY: u32 = 1 << 1;
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;

pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// The hypercall a guest makes to ask its VMM to convert a range (include/uapi/linux/kvm_para.h),
/// and the bit of KVM_CAP_EXIT_HYPERCALL that forwards it to userspace.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// Its third argument (arch/x86/include/uapi/asm/kvm_para.h): page size bits, and bit 4 set for
/// encrypted (private), clear for decrypted (shared).
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// Hypercall return values KVM itself uses (kvm_para.h): negated in the guest's RAX.
pub const KVM_ENOSYS: u64 = 1000;
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;

/// x86 VM types, by the names suites use.
pub const VM_TYPES: &[(&str, u64)] =
    &[("default", 0), ("sw_protected", 1), ("sev", 2), ("sev_es", 3), ("snp", 4), ("tdx", 5)];

pub fn vm_type_name(t: u64) -> String {
    VM_TYPES.iter().find(|(_, v)| *v == t).map(|(n, _)| (*n).to_string()).unwrap_or_else(|| format!("type{t}"))
}

/// struct kvm_userspace_memory_region2, 160 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryRegion2 {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub guest_memfd_offset: u64,
    pub guest_memfd: u32,
    pub pad1: u32,
    pub pad2: [u64; 14],
}

/// struct kvm_userspace_memory_region, 32 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

/// struct kvm_create_guest_memfd, 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateGuestMemfd {
    pub size: u64,
    pub flags: u64,
    pub reserved: [u64; 6],
}

/// struct kvm_memory_attributes, 32 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryAttributes {
    pub address: u64,
    pub size: u64,
    pub attributes: u64,
    pub flags: u64,
}

/// struct kvm_pre_fault_memory, 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PreFaultMemory {
    pub gpa: u64,
    pub size: u64,
    pub flags: u64,
    pub padding: [u64; 5],
}

/// struct kvm_enable_cap, 104 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnableCap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

const _: () = assert!(std::mem::size_of::<EnableCap>() == 104);
const _: () = assert!(std::mem::size_of::<MemoryRegion2>() == 160);
const _: () = assert!(std::mem::size_of::<MemoryRegion>() == 32);
const _: () = assert!(std::mem::size_of::<CreateGuestMemfd>() == 64);
const _: () = assert!(std::mem::size_of::<MemoryAttributes>() == 32);
const _: () = assert!(std::mem::size_of::<PreFaultMemory>() == 64);
