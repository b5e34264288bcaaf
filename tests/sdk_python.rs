//! The spec the running server serves, checked by outside tools: openapi-spec-validator accepts
//! it as OpenAPI 3.0, and openapi-python-client turns it into a Python SDK that drives a whole
//! host/lease round trip (tests/sdk/python_roundtrip.py) against the same server.

#[path = "support/mod.rs"]
mod support;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::{TestApp, python_env, run, spawn_live, tool_dir};

/// One virtualenv for both tools. httpx, attrs and setuptools are pinned too: the first two are
/// the generated package's runtime dependencies, the last builds it (installed without build
/// isolation so that nothing unpinned is fetched at test time).
const PY_TOOLS: &[&str] = &[
    "openapi-python-client==0.29.1",
    "openapi-spec-validator==0.9.0",
    "httpx==0.28.1",
    "attrs==26.1.0",
    "setuptools==84.2.1",
];

/// The spec exactly as the server serves it (the committed copy is compared with it elsewhere).
async fn served_spec(app: &TestApp) -> String {
    let resp = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET /openapi.json");
    resp.text().await.unwrap()
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every operationId in the spec.
fn operation_ids(spec: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for ops in spec["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            ids.push(
                op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("operation without operationId: {op}"))
                    .to_string(),
            );
        }
    }
    ids
}

/// The Python modules the generator wrote under `api/` (one per operation).
fn generated_modules(package: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for tag in std::fs::read_dir(package.join("api")).unwrap() {
        let tag = tag.unwrap().path();
        if !tag.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&tag).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".py")
                && stem != "__init__"
            {
                found.push(stem.to_string());
            }
        }
    }
    found.sort();
    found
}

fn generate_and_run(spec_text: String, base: String) -> String {
    let venv = python_env("sdk-python", PY_TOOLS);
    let bin = venv.join("bin");
    // Generation and installation into the shared venv happen under one lock, so that two test
    // processes on this machine never install over each other.
    let lock = File::create(tool_dir("sdk-python").join(".lock")).unwrap();
    lock.lock().unwrap();

    let work = tempfile::tempdir().unwrap();
    let spec_path = work.path().join("openapi.json");
    std::fs::write(&spec_path, &spec_text).unwrap();
    let config = work.path().join("config.yaml");
    // Stable names instead of ones derived from the spec title.
    std::fs::write(
        &config,
        "project_name_override: blazar-client\npackage_name_override: blazar_client\n",
    )
    .unwrap();
    let out: PathBuf = tool_dir("sdk-python").join("blazar-client");
    // The generator formats its output with ruff, which it finds on PATH (ruff comes with it).
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let generated = run(Command::new(bin.join("openapi-python-client"))
        .arg("generate")
        .arg("--path")
        .arg(&spec_path)
        .arg("--config")
        .arg(&config)
        .args(["--meta", "setup", "--overwrite", "--fail-on-warning"])
        .arg("--output-path")
        .arg(&out)
        .env("PATH", &path));
    println!(
        "openapi-python-client: {}{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );

    // No operation was dropped: one module per operationId.
    let spec: Value = serde_json::from_str(&spec_text).unwrap();
    let mut expected: Vec<String> = operation_ids(&spec)
        .iter()
        .map(|id| camel_to_snake(id))
        .collect();
    expected.sort();
    assert_eq!(
        generated_modules(&out.join("blazar_client")),
        expected,
        "generated operations differ from the spec's operationIds"
    );

    run(Command::new(bin.join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
        ])
        .arg(&out));
    // The package's declared dependencies are met by the pinned ones above.
    run(Command::new(bin.join("pip")).args(["check", "--disable-pip-version-check"]));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/python_roundtrip.py");
    // Run from an empty directory so that `import blazar_client` finds the installed package,
    // not the generated tree.
    let output = run(Command::new(bin.join("python"))
        .arg(&script)
        .arg(&base)
        .current_dir(work.path()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let site = venv.join("lib");
    assert!(
        stdout.contains(&format!("blazar_client from {}", site.display())),
        "the SDK was not imported from the venv:\n{stdout}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_generated_from_served_spec_round_trips() {
    let app = spawn_live(|_| {}).await;
    let spec = served_spec(&app).await;
    let base = app.base.clone();
    let stdout = tokio::task::spawn_blocking(move || generate_and_run(spec, base))
        .await
        .unwrap();
    println!("{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l == "python SDK round trip: all checks passed"),
        "the round trip did not finish:\n{stdout}"
    );
}

fn validate(venv: &Path, file: &Path) -> std::process::Output {
    let cmd = venv.join("bin/openapi-spec-validator");
    Command::new(&cmd)
        // 3.0 explicitly: the generators we serve read 3.0, not 3.1.
        .args(["--schema", "3.0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_spec_is_valid_openapi_3_0() {
    let app = spawn_live(|_| {}).await;
    let spec_text = served_spec(&app).await;
    let mut spec: Value = serde_json::from_str(&spec_text).unwrap();
    assert_eq!(spec["openapi"], "3.0.0");

    let (good, bad) = tokio::task::spawn_blocking(move || {
        let venv = python_env("sdk-python", PY_TOOLS);
        let work = tempfile::tempdir().unwrap();
        let served = work.path().join("openapi.json");
        std::fs::write(&served, &spec_text).unwrap();
        let good = validate(&venv, &served);

        // The same document with one schema broken must be refused: proof that the validator
        // really reads the schemas rather than only the top-level keys.
        spec["components"]["schemas"]["Lease"]["properties"]["name"]["type"] = "text".into();
        let broken = work.path().join("broken.json");
        std::fs::write(&broken, serde_json::to_vec(&spec).unwrap()).unwrap();
        let bad = validate(&venv, &broken);
        (good, bad)
    })
    .await
    .unwrap();

    let good_out = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "openapi-spec-validator refused the served spec:\n{good_out}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(good_out.trim_end().ends_with(": OK"), "{good_out}");
    println!("openapi-spec-validator: {}", good_out.trim_end());
    assert!(
        !bad.status.success(),
        "openapi-spec-validator accepted a spec with an invalid schema type"
    );
}
