//! `docs/math.md` names, beside each equation, the function that computes it. This test fails when
//! a name there no longer exists: each `crate::module::Item` or `crate::module::Type::method`
//! path must lead to a source file that defines the item.

use std::path::{Path, PathBuf};

/// The source directory of a crate by the name code uses for it.
fn crate_dir(name: &str) -> Option<&'static str> {
    Some(match name {
        "pmixer_kernels" => "crates/kernels/src",
        "pmixer_autodiff" => "crates/autodiff/src",
        "pmixer_model" => "crates/model/src",
        "pmixer" => "crates/trainer/src",
        _ => return None,
    })
}

/// Where `path` (crate::module::…::Item[::method]) says its item is defined, or why not.
fn check(root: &Path, path: &str) -> Result<(), String> {
    let segs: Vec<&str> = path.split("::").collect();
    let dir = crate_dir(segs[0]).ok_or_else(|| format!("unknown crate {}", segs[0]))?;
    let mut file = root.join(dir);
    let mut rest = &segs[1..];
    // Module segments: each a file (or a directory with mod.rs) of the crate.
    let is_module = |f: &Path| f.with_extension("rs").is_file() || f.join("mod.rs").is_file();
    while let Some(seg) = rest.first().filter(|s| is_module(&file.join(s))) {
        file = file.join(seg);
        rest = &rest[1..];
    }
    if rest.is_empty() {
        return Ok(()); // the path names a module
    }
    let source = [file.with_extension("rs"), file.join("mod.rs")]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .ok_or_else(|| format!("no module file {}.rs", file.display()))?;
    let defines = |item: &str| {
        ["fn ", "struct ", "enum ", "trait ", "type "].iter().any(|k| {
            source
                .match_indices(&format!("{k}{item}"))
                .any(|(i, m)| !source[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    };
    match rest {
        [item] if defines(item) => Ok(()),
        [ty, method] if defines(ty) && defines(method) => Ok(()),
        _ => Err(format!("{} defines no {}", file.display(), rest.join("::"))),
    }
}

#[test]
fn every_function_math_md_names_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/math.md")).expect("docs/math.md");
    // Every `…` span, and every bare path in the code blocks, that starts with a crate's name.
    let paths: Vec<&str> = doc
        .split(|c: char| c.is_whitespace() || "`(),".contains(c))
        .filter(|w| w.contains("::") && crate_dir(w.split("::").next().unwrap_or("")).is_some())
        .collect();
    assert!(paths.len() >= 25, "only {} paths found in docs/math.md", paths.len());
    let broken: Vec<String> =
        paths.iter().filter_map(|p| check(&root, p).err().map(|e| format!("{p}: {e}"))).collect();
    assert!(broken.is_empty(), "docs/math.md names what does not exist:\n{}", broken.join("\n"));
}

#[test]
fn a_renamed_function_is_caught() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(check(&root, "pmixer_kernels::gelu::gelu_grad").is_ok());
    assert!(check(&root, "pmixer_autodiff::optim::Adam::update").is_ok());
    assert!(check(&root, "pmixer_kernels::gelu::gelu_gradient").is_err());
    assert!(check(&root, "pmixer_kernels::gelu::gel").is_err(), "a prefix of a name is not the name");
    assert!(check(&root, "pmixer_autodiff::optim::Adam::upgrade").is_err());
    assert!(check(&root, "pmixer_kernels::nowhere::f").is_err());
    assert!(check(&root, "pmixer_kernels::mlp").is_ok(), "a module");
}
