//! What the template does for releases, read from its SAM translation: the booking API and
//! worker publish every change as a new version behind the alias `live` and shift traffic to it
//! through CodeDeploy, watched by their canary alarms — which watch only that version — and, for
//! the API, checked first by the canary hook; a new extension layer or a parameter reaching a
//! function publishes a new version.

use std::path::Path;
use std::process::Command;

use keel_infra::alarms::{self, Role, ALIAS, MAX_DEPLOYMENT_GROUP_ALARMS};
use keel_infra::services::{Service, RELEASED};
use keel_infra::template::{version_digest_parameter, FUNCTION_PARAMETERS};
use serde_json::{json, Value};

use crate::lint::{resources, translated};

/// The logical ids of the resources of `kind` whose id starts with `prefix`.
fn ids_of(kind: &str, prefix: &str) -> Vec<String> {
    resources()
        .iter()
        .filter(|(id, resource)| id.starts_with(prefix) && resource["Type"] == kind)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The one version resource of `service`'s function.
fn version_id(service: &Service) -> String {
    let ids = ids_of("AWS::Lambda::Version", &format!("{}Version", service.function()));
    assert_eq!(ids.len(), 1, "{}: versions {ids:?}", service.name);
    ids[0].clone()
}

#[test]
fn released_functions_shift_traffic_through_codedeploy_watched_by_their_canary_alarms() {
    let resources = resources();
    for service in &RELEASED {
        let function = service.function();
        let version = version_id(service);
        let alias = &resources[&format!("{function}Alias{ALIAS}")];
        assert_eq!(alias["Properties"]["Name"], ALIAS);
        assert_eq!(
            alias["Properties"]["FunctionVersion"],
            json!({"Fn::GetAtt": [version, "Version"]})
        );
        let update = &alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"];
        let group_id = format!("{function}DeploymentGroup");
        assert_eq!(update["DeploymentGroupName"], json!({"Ref": group_id}));
        let hook = &update["BeforeAllowTrafficHook"];
        if service.name == "booking-api" {
            assert_eq!(*hook, json!({"Ref": "CanaryHookFunction"}), "{alias}");
        } else {
            assert!(hook.is_null(), "{}: {alias}", service.name);
        }

        let group = &resources[&group_id]["Properties"];
        assert_eq!(group["AutoRollbackConfiguration"]["Enabled"], true);
        assert!(group["AutoRollbackConfiguration"]["Events"]
            .as_array()
            .unwrap()
            .contains(&json!("DEPLOYMENT_STOP_ON_ALARM")));
        let in_group: Vec<&str> = group["AlarmConfiguration"]["Alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alarm| alarm["Name"]["Ref"].as_str().unwrap())
            .collect();
        let canary: Vec<String> = alarms::for_service(service)
            .into_iter()
            .filter(|alarm| alarm.role == Role::Canary)
            .map(|alarm| alarm.id)
            .collect();
        assert_eq!(
            in_group, canary,
            "{}: the deployment group's alarms",
            service.name
        );
        assert!(canary.len() <= MAX_DEPLOYMENT_GROUP_ALARMS);

        // Every canary alarm watches the version being released, through the alias.
        for id in &canary {
            let alarm = &resources[id]["Properties"];
            let dimensions: Vec<&Value> = match alarm["Metrics"].as_array() {
                Some(queries) => queries
                    .iter()
                    .filter_map(|q| q["MetricStat"]["Metric"]["Dimensions"].as_array())
                    .flatten()
                    .collect(),
                None => alarm["Dimensions"].as_array().unwrap().iter().collect(),
            };
            let versions: Vec<&Value> = dimensions
                .iter()
                .filter(|d| d["Name"] == "ExecutedVersion" || d["Name"] == keel_catalog::VERSION_DIMENSION)
                .map(|d| &d["Value"])
                .collect();
            assert!(!versions.is_empty(), "{id} watches no version: {alarm}");
            for value in versions {
                assert_eq!(*value, json!({"Fn::GetAtt": [version, "Version"]}), "{id}");
            }
            for resource in dimensions.iter().filter(|d| d["Name"] == "Resource") {
                assert_eq!(
                    resource["Value"],
                    json!({"Fn::Sub": format!("${{{function}}}:{ALIAS}")}),
                    "{id}"
                );
            }
        }
    }

    // The hook checks the version being released, has a role of its own and is not released.
    let hook = &resources["CanaryHookFunction"]["Properties"];
    assert_eq!(
        hook["Environment"]["Variables"]["TARGET_FUNCTION"],
        json!({"Ref": version_id(&RELEASED[0])})
    );
    assert!(hook["Role"]["Fn::GetAtt"][0] == "CanaryHookRole", "{hook}");
    assert!(ids_of("AWS::Lambda::Alias", "CanaryHook").is_empty());
    assert!(ids_of("AWS::CodeDeploy::DeploymentGroup", "CanaryHook").is_empty());
}

#[test]
fn every_alarm_notifies_the_encrypted_alarm_topic() {
    let resources = resources();
    let topic = &resources["AlarmTopic"]["Properties"];
    assert_eq!(topic["KmsMasterKeyId"], json!({"Ref": "KeelKey"}));
    let key_policy = resources["KeelKey"]["Properties"]["KeyPolicy"].to_string();
    assert!(key_policy.contains("cloudwatch.amazonaws.com"), "{key_policy}");
    for service in &RELEASED {
        for alarm in alarms::for_service(service) {
            let properties = &resources[&alarm.id]["Properties"];
            assert_eq!(
                properties["AlarmActions"],
                json!([{"Ref": "AlarmTopic"}]),
                "{}",
                alarm.id
            );
            if let Some(parameter) = alarm.threshold_parameter {
                assert_eq!(properties["Threshold"], json!({"Ref": parameter.name}));
            }
        }
    }
}

/// The version ids of the released functions in the template translated with `parameters`.
fn versions_with(parameters: &[(&str, String)]) -> Vec<String> {
    let root = keel_tests::workspace_root();
    let out = root.join(format!(
        "target/infra/release-{}.json",
        keel_tests::unique_name("t")
    ));
    let python = std::env::var_os("KEEL_LINT_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-lint"))
        .join("bin/python");
    let translation = Command::new(python)
        .current_dir(&root)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .arg("scripts/translate-template.py")
        .arg("infra/template.yaml")
        .arg(&out)
        .args(parameters.iter().map(|(name, value)| format!("{name}={value}")))
        .output()
        .expect("the translation runs");
    assert!(
        translation.status.success(),
        "{}",
        String::from_utf8_lossy(&translation.stderr)
    );
    let translated: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut versions: Vec<String> = translated["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::Lambda::Version")
        .map(|(id, _)| id.clone())
        .collect();
    versions.sort();
    versions
}

/// `service`'s version digest as `scripts/deploy.sh` computes it (`scripts/version-digest.sh`),
/// over `bootstrap`, the layer zip `layer` and the parameters' `values`.
fn version_digest(service: &str, bootstrap: &Path, layer: &Path, values: &[(&str, &str)]) -> String {
    let output = Command::new("bash")
        .arg(keel_tests::workspace_root().join("scripts/version-digest.sh"))
        .args([service.as_ref(), bootstrap.as_os_str(), layer.as_os_str()])
        .args(values.iter().map(|(name, value)| format!("{name}={value}")))
        .env("KEEL_INFRA", env!("CARGO_BIN_EXE_keel-infra"))
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && digest.len() == 64,
        "version-digest.sh {service}: {output:?}"
    );
    digest
}

#[test]
fn the_deploy_script_digests_every_parameter_that_reaches_a_function() {
    let script = std::fs::read_to_string(keel_tests::workspace_root().join("scripts/deploy.sh")).unwrap();
    let digest = script
        .split("digest() {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("deploy.sh has a digest function");
    assert!(
        digest.contains("scripts/version-digest.sh \"$1\" \"target/lambda/$1/bootstrap\" target/layers/keel-extension.zip"),
        "deploy.sh digests each function's bootstrap and the layer it deploys: {digest}"
    );
    for parameter in FUNCTION_PARAMETERS {
        assert!(
            digest.contains(&format!("\"{parameter}=$")),
            "deploy.sh does not digest {parameter}: {digest}"
        );
    }
    for service in &RELEASED {
        let parameter = version_digest_parameter(service);
        assert!(
            script.contains(&format!("\"{parameter}=$")),
            "deploy.sh does not pass {parameter}"
        );
        assert!(keel_infra::template::version_inputs(service.name).is_some());
    }
    let digest_script =
        std::fs::read_to_string(keel_tests::workspace_root().join("scripts/version-digest.sh")).unwrap();
    assert!(
        digest_script.contains("--version-inputs \"$service\""),
        "version-digest.sh digests the template's definition"
    );
    assert!(
        script.contains("\"LogLevel=$log_level\""),
        "deploy.sh passes the LogLevel it digests"
    );
    // And those are all the parameters the functions see.
    let template = keel_infra::template::template();
    let functions = template.get("Resources").unwrap();
    let globals = template.get("Globals").unwrap();
    let text = format!("{functions:?}{globals:?}");
    let referenced: Vec<&str> = [
        "Architecture",
        "LogLevel",
        "LogRetentionDays",
        "JwtIssuer",
        "AlarmEmail",
        "DeploymentType",
    ]
    .into_iter()
    .filter(|p| format!("{globals:?}").contains(&format!("Str(\"{p}\")")))
    .collect();
    assert!(text.contains("LogLevel"));
    assert_eq!(referenced, FUNCTION_PARAMETERS, "the Globals' parameters");
}

#[test]
fn a_new_layer_zip_or_a_parameter_reaching_a_function_publishes_new_versions() {
    translated(); // the linters are installed
    let dir = keel_tests::workspace_root().join("target/infra");
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join(keel_tests::unique_name("bootstrap"));
    std::fs::write(&bootstrap, b"a booking function").unwrap();
    let zip = dir.join(keel_tests::unique_name("layer"));
    let digests = |values: &[(&str, &str)]| -> Vec<(String, String)> {
        RELEASED
            .iter()
            .map(|service| {
                (
                    version_digest_parameter(service),
                    version_digest(service.name, &bootstrap, &zip, values),
                )
            })
            .collect()
    };
    let info = [("Architecture", "x86_64"), ("LogLevel", "INFO")];
    std::fs::write(&zip, b"extensions/keel-extension, first build").unwrap();
    let first = digests(&info);
    let debug = digests(&[("Architecture", "x86_64"), ("LogLevel", "DEBUG")]);
    std::fs::write(&zip, b"extensions/keel-extension, second build").unwrap();
    let second = digests(&info);
    let _ = std::fs::remove_file(&zip);
    let _ = std::fs::remove_file(&bootstrap);
    let with = |digests: &[(String, String)], more: &[(&str, &str)]| {
        let mut parameters: Vec<(&str, String)> = digests
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        parameters.extend(more.iter().map(|(name, value)| (*name, (*value).to_owned())));
        versions_with(&parameters)
    };

    let before = with(&first, &[]);
    assert_eq!(before.len(), RELEASED.len(), "{before:?}");
    assert_eq!(with(&first, &[]), before, "the same inputs, the same versions");
    for changed in [with(&second, &[]), with(&debug, &[("LogLevel", "DEBUG")])] {
        assert_eq!(changed.len(), before.len());
        for (old, new) in before.iter().zip(&changed) {
            assert_ne!(old, new, "no new version: {before:?} {changed:?}");
        }
    }
    // What does not reach the functions publishes nothing.
    assert_eq!(with(&first, &[("AlarmEmail", "oncall@example.com")]), before);
}
