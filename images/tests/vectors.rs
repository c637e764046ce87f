//! Expected measurements against real evidence: the dstack launch inputs reproduce the
//! hardware-signed report's MEASUREMENT, the virtee OVMF fixture gives its published hash and
//! digest, and the GCE CCEL log replays into the RTMRs of the quote it came with.

mod common;

use common::*;
use conclave_attestation::{Measurement, Policy};
use conclave_images::MeasureError;
use conclave_images::policy::{TdxPins, snp_fragment, tdx_fragment};
use conclave_images::snp::hashes::SevHashes;
use conclave_images::snp::inputs::from_dstack_json;
use conclave_images::snp::ovmf::{Ovmf, ovmf_hash};
use conclave_images::snp::vmsa::{CpuSignature, GuestFeatures, VmmType};
use conclave_images::snp::{Firmware, SnpLaunch};
use conclave_images::tdx::{ccel, compare_with_quote};

fn m(hex: &str) -> Measurement {
    Measurement::from_hex(hex).unwrap()
}

fn amdsev_launch(vcpus: u32) -> SnpLaunch {
    SnpLaunch {
        firmware: Firmware::from_ovmf(&read(AMDSEV)).unwrap(),
        kernel: Some(SevHashes::from_contents(b"", b"", AMDSEV_SUFFIX_CMDLINE)),
        vcpus,
        vcpu_sig: CpuSignature::from_qemu_model("EPYC-v4").unwrap(),
        guest_features: GuestFeatures(0x21),
        vmm: VmmType::Qemu,
    }
}

#[test]
fn dstack_launch_inputs_reproduce_the_real_reports_measurement() {
    let launch = from_dstack_json(&read(LAUNCH_INPUTS)).unwrap();
    assert_eq!(launch.vcpus, 2);
    assert_eq!(launch.vcpu_sig, CpuSignature(0x0080_0f12));
    assert_eq!(launch.firmware.sections.len(), 7);
    let digest = launch.launch_digest().unwrap();
    assert_eq!(digest, m(DSTACK_MEASUREMENT));
    // And it is the MEASUREMENT field (0x90..0xC0) of the signed report itself.
    let report = read(DSTACK_REPORT);
    assert_eq!(&digest.0[..], &report[0x90..0xC0]);
}

#[test]
fn dstack_measurement_changes_with_any_launch_input() {
    let base = from_dstack_json(&read(LAUNCH_INPUTS)).unwrap();
    let mut l = base.clone();
    l.guest_features = GuestFeatures(0x21);
    assert_ne!(l.launch_digest().unwrap(), m(DSTACK_MEASUREMENT));
    let mut l = base.clone();
    l.vcpus = 4;
    assert_ne!(l.launch_digest().unwrap(), m(DSTACK_MEASUREMENT));
    let mut l = base;
    if let Some(k) = l.kernel.as_mut() {
        k.cmdline[0] ^= 1;
    }
    assert_ne!(l.launch_digest().unwrap(), m(DSTACK_MEASUREMENT));
}

#[test]
fn ovmf_suffix_hash_and_launch_digest_match_the_published_values() {
    assert_eq!(
        ovmf_hash(&read(AMDSEV)).unwrap(),
        m(AMDSEV_SUFFIX_OVMF_HASH)
    );
    assert_eq!(
        amdsev_launch(1).launch_digest().unwrap(),
        m(AMDSEV_SUFFIX_DIGEST)
    );
    // The same with the OVMF hash given instead of computed (sev-snp-measure --snp-ovmf-hash).
    let mut l = amdsev_launch(1);
    l.firmware.ovmf_hash = m(AMDSEV_SUFFIX_OVMF_HASH);
    assert_eq!(l.launch_digest().unwrap(), m(AMDSEV_SUFFIX_DIGEST));
}

#[test]
fn agrees_with_the_sev_crates_measurement_module() {
    use sev::measurement::snp::{SnpMeasurementArgs, snp_calc_launch_digest};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures as SevFeatures, VMMType};

    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    let initrd = dir.path().join("initrd");
    let kernel_bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initrd_bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(&kernel, &kernel_bytes).unwrap();
    std::fs::write(&initrd, &initrd_bytes).unwrap();
    let cmdline = "console=ttyS0 root=/dev/vda";
    for vcpus in [1u32, 2, 4] {
        for features in [0x1u64, 0x21] {
            let theirs = snp_calc_launch_digest(SnpMeasurementArgs {
                vcpus,
                vcpu_type: CpuType::EpycV4,
                ovmf_file: path(AMDSEV),
                guest_features: SevFeatures(features),
                kernel_file: Some(kernel.clone()),
                initrd_file: Some(initrd.clone()),
                append: Some(cmdline),
                ovmf_hash_str: None,
                vmm_type: Some(VMMType::QEMU),
            })
            .unwrap();
            let mut ours = amdsev_launch(vcpus);
            ours.kernel = Some(SevHashes::from_contents(
                &kernel_bytes,
                &initrd_bytes,
                cmdline,
            ));
            ours.guest_features = GuestFeatures(features);
            assert_eq!(
                ours.launch_digest().unwrap().to_string(),
                theirs.get_hex_ld(),
                "{vcpus} vCPUs, features {features:#x}"
            );
        }
    }
}

#[test]
fn an_ovmf_without_a_kernel_hashes_section_refuses_a_kernel() {
    let fw = Firmware::from_ovmf(&read(OVMFX64)).unwrap();
    let ovmf = read(OVMFX64);
    let parsed = Ovmf::parse(&ovmf).unwrap();
    assert!(
        parsed
            .sections()
            .iter()
            .all(|s| s.kind.name() != "SNP_KERNEL_HASHES")
    );
    let mut l = amdsev_launch(1);
    l.firmware = fw;
    assert_eq!(l.launch_digest(), Err(MeasureError::NoKernelHashesSection));
    l.kernel = None;
    assert!(l.launch_digest().is_ok());
}

#[test]
fn snp_policy_fragment_is_accepted_by_the_policy_parser() {
    let digest = from_dstack_json(&read(LAUNCH_INPUTS))
        .unwrap()
        .launch_digest()
        .unwrap();
    let text = snp_fragment(&digest, &["from launch_inputs.json".to_string()]);
    let policy = Policy::from_toml(&text).unwrap();
    assert_eq!(policy.measurements, vec![m(DSTACK_MEASUREMENT)]);
}

#[test]
fn ccel_replay_reproduces_the_cos113_quotes_rtmrs() {
    let log = ccel::parse(&read(CCEL)).unwrap();
    assert_eq!(log.algorithms, vec![(0x000c, 48)]);
    let replay = log.replay().unwrap();
    assert_eq!(replay.extends.iter().sum::<usize>(), 43);
    assert_eq!(replay.extends[3], 0);
    let cmp = compare_with_quote(&replay, &read(COS_QUOTE)).unwrap();
    assert!(cmp.boot_rtmrs_match(), "{cmp:?}");
    assert!(
        cmp.rtmrs.iter().all(|c| c.matches()),
        "RTMR3 is zero on both sides"
    );
    assert_eq!(replay.rtmrs[3], Measurement([0; 48]));
}

#[test]
fn a_tampered_ccel_digest_does_not_reproduce_the_quote() {
    let bytes = read(CCEL);
    let log = ccel::parse(&bytes).unwrap();
    let quote = read(COS_QUOTE);
    // Flip one byte of the SHA-384 digest of the first event of each RTMR in turn.
    for rtmr in 0..3u32 {
        let event = log
            .events
            .iter()
            .find(|e| e.mr_index == rtmr + 1 && e.event_type != 3)
            .unwrap();
        // mr_index u32, type u32, count u32, alg u16, then the digest.
        let at = event.offset + 14 + 5;
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        let cmp = compare_with_quote(&ccel::replay(&tampered).unwrap(), &quote).unwrap();
        assert!(!cmp.boot_rtmrs_match());
        for c in &cmp.rtmrs {
            assert_eq!(c.matches(), c.index != rtmr as usize, "RTMR{}", c.index);
        }
    }
}

#[test]
fn the_ccel_does_not_match_another_tds_quote() {
    let replay = ccel::replay(&read(CCEL)).unwrap();
    let cmp = compare_with_quote(&replay, &read(DCAP_QUOTE)).unwrap();
    assert!(!cmp.boot_rtmrs_match());
    assert!(matches!(
        compare_with_quote(&replay, b"not a quote"),
        Err(MeasureError::Quote(_))
    ));
}

#[test]
fn tdx_policy_fragment_pins_the_replayed_rtmrs() {
    let replay = ccel::replay(&read(CCEL)).unwrap();
    let cmp = compare_with_quote(&replay, &read(COS_QUOTE)).unwrap();
    let pins = TdxPins {
        mr_td: Some(cmp.mr_td),
        rtmrs: [
            Some(replay.rtmrs[0]),
            Some(replay.rtmrs[1]),
            Some(replay.rtmrs[2]),
            None,
        ],
    };
    let policy = Policy::from_toml(&tdx_fragment(&pins, &[])).unwrap();
    assert_eq!(policy.measurements, vec![cmp.mr_td]);
    assert_eq!(policy.tdx.rtmr0, vec![cmp.rtmrs[0].quoted]);
    assert_eq!(policy.tdx.rtmr1, vec![cmp.rtmrs[1].quoted]);
    assert_eq!(policy.tdx.rtmr2, vec![cmp.rtmrs[2].quoted]);
    assert!(policy.tdx.rtmr3.is_empty());
}
