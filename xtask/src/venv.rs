//! The project venv: moto and cargo-lambda from PyPI, pinned in `xtask/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

pub struct Venv {
    pub root: PathBuf,
}

impl Venv {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }
}

/// The workspace root: the parent of the running package's directory. Read at run time (cargo
/// sets `CARGO_MANIFEST_DIR` for `cargo run` and `cargo test`), not compile time: clones that
/// share one `CARGO_TARGET_DIR` share the `xtask` binary too, and must each test their own tree.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Creates `.venv` and installs the pinned requirements, unless the same requirements are
/// already installed (a stamp file holds the requirements it was built from).
pub fn ensure() -> anyhow::Result<Venv> {
    let root = workspace_root();
    let venv = Venv {
        root: root.join(".venv"),
    };
    let requirements_path = root.join("xtask/requirements.txt");
    let requirements =
        std::fs::read_to_string(&requirements_path).context("reading xtask/requirements.txt")?;
    let stamp = venv.root.join(".requirements.stamp");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements)
        && venv.bin("moto_server").exists()
    {
        return Ok(venv);
    }
    eprintln!("xtask: setting up .venv (moto, cargo-lambda) from xtask/requirements.txt");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv.root))?;
    run(Command::new(venv.bin("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements_path))?;
    std::fs::write(&stamp, requirements).context("writing venv stamp")?;
    Ok(venv)
}
