//! The suites and baselines built into the binary: `gmemconf run` with no files runs these, so the
//! binary alone (e.g. as /init of a test kernel's initramfs) carries the whole conformance suite.

pub const SUITES: &[(&str, &str)] = &[
    ("suites/sealing.yaml", include_str!("../../../suites/sealing.yaml")),
    ("suites/memslot-sharing.yaml", include_str!("../../../suites/memslot-sharing.yaml")),
    ("suites/lifetime.yaml", include_str!("../../../suites/lifetime.yaml")),
    ("suites/read-path.yaml", include_str!("../../../suites/read-path.yaml")),
    ("suites/stage2-race.yaml", include_str!("../../../suites/stage2-race.yaml")),
    ("suites/conversion.yaml", include_str!("../../../suites/conversion.yaml")),
    ("suites/prefault.yaml", include_str!("../../../suites/prefault.yaml")),
];

pub const BASELINES: &[(&str, &str)] = &[
    ("suites/baselines/sealing.yaml", include_str!("../../../suites/baselines/sealing.yaml")),
    ("suites/baselines/memslot-sharing.yaml", include_str!("../../../suites/baselines/memslot-sharing.yaml")),
    ("suites/baselines/conversion.yaml", include_str!("../../../suites/baselines/conversion.yaml")),
    ("suites/baselines/prefault.yaml", include_str!("../../../suites/baselines/prefault.yaml")),
];
