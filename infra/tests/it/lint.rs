//! The template passes cfn-lint (before and after its SAM translation) and checkov, and what it
//! deploys fits the code: every function carries the Keel extension layer built by
//! `scripts/package-extension.sh` (`tests/tests/extension.rs` checks the zip is where the
//! template looks), knows the relay's address, and its role is least privilege.

use std::process::Command;

use keel_infra::template::RELAY_ADDR;
use serde_json::Value;

#[test]
fn the_template_lints_clean_and_every_function_carries_the_extension_layer() {
    let root = keel_tests::workspace_root();
    let lint = Command::new("bash")
        .arg(root.join("scripts/lint-template.sh"))
        .output()
        .expect("the lint script runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(lint.status.success(), "cfn-lint or checkov failed:\n{output}");
    assert!(output.contains("Failed checks: 0"), "{output}");

    let translated: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/infra/template.translated.json")).unwrap(),
    )
    .unwrap();
    let resources = translated["Resources"].as_object().unwrap();
    let functions: Vec<(&String, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Lambda::Function")
        .collect();
    assert!(!functions.is_empty());
    for (name, function) in functions {
        let properties = &function["Properties"];
        let layers = properties["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no layers"));
        // One layer, the extension built for the stack's architecture: `Fn::If` over the two.
        assert_eq!(layers.len(), 1, "{name}: {layers:?}");
        let choice = &layers[0]["Fn::If"];
        assert_eq!(choice[0], "OnArm64", "{name}: {layers:?}");
        let architectures: Vec<&str> = [&choice[1], &choice[2]]
            .iter()
            .map(|layer| {
                let id = layer["Ref"].as_str().unwrap_or_default();
                let version = &resources[id];
                assert_eq!(version["Type"], "AWS::Lambda::LayerVersion", "{name}: {id}");
                assert!(version["Properties"]["LayerName"]
                    .to_string()
                    .contains("keel-extension"));
                version["Properties"]["CompatibleArchitectures"][0]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            architectures,
            ["arm64", "x86_64"],
            "{name}: the arm64 layer when OnArm64"
        );
        assert_eq!(properties["Architectures"][0]["Ref"], "Architecture");
        let variables = &properties["Environment"]["Variables"];
        assert_eq!(variables["KEEL_EXTENSION_ADDR"], RELAY_ADDR, "{name}");
        assert!(variables["KEEL_ERROR_TOPIC_ARN"].is_object() && variables["KEEL_DLQ_URL"].is_object());

        // Least privilege: no managed policies, no wildcard actions; a wildcard resource only
        // for X-Ray, which has no resource-level permissions.
        let role = properties["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        let role = &resources[role];
        assert!(
            role["Properties"]["ManagedPolicyArns"].is_null(),
            "{name}: {role}"
        );
        let mut statements: Vec<&Value> = role["Properties"]["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
            .collect();
        statements.extend(
            resources
                .values()
                .filter(|r| r["Type"] == "AWS::IAM::Policy")
                .filter(|p| {
                    p["Properties"]["Roles"]
                        .to_string()
                        .contains(properties["Role"]["Fn::GetAtt"][0].as_str().unwrap())
                })
                .flat_map(|p| p["Properties"]["PolicyDocument"]["Statement"].as_array().unwrap()),
        );
        for statement in statements {
            let actions: Vec<&str> = statement["Action"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(actions.iter().all(|a| !a.contains('*')), "{name}: {statement}");
            if statement["Resource"] == "*" {
                assert!(
                    actions.iter().all(|a| a.starts_with("xray:")),
                    "{name}: {statement}"
                );
            }
        }
    }
}

#[test]
fn the_template_points_the_functions_at_the_relay_the_extension_serves() {
    assert_eq!(RELAY_ADDR, keel_runtime::routing::DEFAULT_RELAY_ADDR);
}
