//! The settings' layers through the real binary: a sectioned file, the `BLAZAR_<SECTION>__<KEY>`
//! variables, and the flat keys and variables of earlier releases with their warnings.
//! `blazar-server migrate` creates the database the settings name and exits, so where the file
//! appears says which layer won.

use std::{path::Path, process::Command};

fn migrate(config: Option<&Path>, env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blazar-server"));
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    // Only the variables a test names: none of the caller's BLAZAR_* leak in.
    cmd.arg("migrate").env_clear().env("RUST_LOG", "warn");
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    let out = cmd.output().expect("run blazar-server");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn sqlite(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

#[test]
fn a_sectioned_file_and_the_new_variables_are_read_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let (file_db, env_db) = (dir.path().join("file.db"), dir.path().join("env.db"));
    let config = dir.path().join("blazar.toml");
    let toml = format!(
        "[database]\nconnection = \"{}\"\n[manager]\nminutes_before_end_lease = 30\n",
        sqlite(&file_db)
    );
    std::fs::write(&config, toml).unwrap();
    let (ok, out) = migrate(Some(&config), &[]);
    assert!(ok && file_db.exists(), "{out}");
    assert!(!out.contains("deprecated"), "{out}");
    let env = [("BLAZAR_DATABASE__CONNECTION", sqlite(&env_db))];
    let (ok, out) = migrate(Some(&config), &env);
    assert!(
        ok && env_db.exists(),
        "the variable wins over the file: {out}"
    );
}

#[test]
fn old_flat_keys_and_variables_still_work_with_a_warning_naming_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (file_db, old_env_db, new_env_db) = (
        dir.path().join("file.db"),
        dir.path().join("old.db"),
        dir.path().join("new.db"),
    );
    let config = dir.path().join("blazar.toml");
    std::fs::write(
        &config,
        format!("database_url = \"{}\"\n", sqlite(&file_db)),
    )
    .unwrap();
    let (ok, out) = migrate(Some(&config), &[]);
    assert!(ok && file_db.exists(), "{out}");
    assert!(
        out.contains("`database_url` is deprecated: use [database] connection"),
        "{out}"
    );

    let (ok, out) = migrate(Some(&config), &[("DATABASE_URL", sqlite(&old_env_db))]);
    assert!(
        ok && old_env_db.exists(),
        "an old variable still wins over the file: {out}"
    );
    assert!(
        out.contains("DATABASE_URL is deprecated: use BLAZAR_DATABASE__CONNECTION"),
        "{out}"
    );

    let env = [
        ("DATABASE_URL", sqlite(&dir.path().join("loser.db"))),
        ("BLAZAR_DATABASE__CONNECTION", sqlite(&new_env_db)),
    ];
    let (ok, out) = migrate(Some(&config), &env);
    assert!(ok && new_env_db.exists(), "the new variable wins: {out}");
    assert!(!dir.path().join("loser.db").exists());
}

#[test]
fn a_bad_value_names_the_sectioned_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blazar.toml");
    std::fs::write(&config, "[\"physical:host\"]\nbefore_end = \"reboot\"\n").unwrap();
    let (ok, out) = migrate(Some(&config), &[]);
    assert!(!ok);
    assert!(out.contains("[physical_host] before_end"), "{out}");
}
