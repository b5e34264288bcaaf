//! Generates the client from the committed spec with progenitor's generator (its build-script
//! flow), into $OUT_DIR/codegen.rs, which src/lib.rs includes.

use std::{env, fs, path::Path};

fn main() {
    // The committed spec, byte-for-byte what the server serves (tests/api/contract.rs).
    let spec_path = "../openapi/blazar-v1.json";
    println!("cargo::rerun-if-changed={spec_path}");
    let text =
        fs::read_to_string(spec_path).unwrap_or_else(|e| panic!("cannot read {spec_path}: {e}"));
    let spec = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{spec_path} is not an OpenAPI 3.0 document: {e}"));

    // Builder style (`client.list_leases().limit(10).send()`, `types::LeaseCreate::builder()`)
    // rather than positional arguments and struct literals: an optional query parameter or body
    // field added to the API then leaves existing callers compiling. Tags are merged into one
    // Client. Generation errors (e.g. an operation with several 2xx responses) stop the build
    // with progenitor's message.
    let mut settings = progenitor::GenerationSettings::new();
    settings.with_interface(progenitor::InterfaceStyle::Builder);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .unwrap_or_else(|e| panic!("progenitor cannot generate a client from {spec_path}: {e}"));
    let file: syn::File = syn::parse2(tokens).expect("progenitor emitted invalid Rust");
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("codegen.rs");
    fs::write(&out, prettyplease::unparse(&file)).unwrap();
}
