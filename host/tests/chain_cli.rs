//! `conclave chain up`: a real anvil with the contract deployed, described in JSON.

use std::process::Command;

#[test]
fn chain_up_deploys_the_contract_on_a_local_anvil() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chain.json");
    let o = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["chain", "up", "--port", "0", "--exit", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(info["chain_id"], 31337);
    let contract = info["contract"].as_str().unwrap();
    assert!(
        contract.starts_with("0x") && contract.len() == 42,
        "{contract}"
    );
    assert!(text.contains(contract), "{text}");
    assert!(
        info["rpc"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
}
