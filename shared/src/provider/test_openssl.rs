//! What the adapters' tests share to cross-check against the `openssl` command line, an
//! implementation independent of ours: a scratch directory, running `openssl` in it, an RSA key,
//! and the `openssl dgst` arguments that sign and verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory under the system temp dir, removed on drop (also when a test fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `label` leads the directory's name (e.g. `alipay-request`).
    pub fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut random = [0_u8; 8];
        aws_lc_rs::rand::fill(&mut random).expect("random");
        let dir = std::env::temp_dir().join(format!(
            "{label}-{}-{nanos}-{}",
            std::process::id(),
            hex::encode(random)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read temp file")
    }

    pub fn read_bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read temp file")
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).expect("write temp file");
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl` with `args` in `dir`, whatever its exit status.
pub fn openssl_output(dir: impl AsRef<Path>, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (it must be installed)")
}

/// Whether `openssl` with `args` in `dir` succeeds.
pub fn openssl_ok(dir: impl AsRef<Path>, args: &[&str]) -> bool {
    openssl_output(dir, args).status.success()
}

/// Runs `openssl` with `args` in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: impl AsRef<Path>, args: &[&str]) -> Output {
    let output = openssl_output(dir, args);
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Makes an RSA-2048 key in `dir`: the private PEM in `key_file`, the public in `public_file`.
pub fn openssl_rsa_key(dir: impl AsRef<Path>, key_file: &str, public_file: &str) {
    let dir = dir.as_ref();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key_file,
        ],
    );
    openssl(
        dir,
        &["pkey", "-in", key_file, "-pubout", "-out", public_file],
    );
}

/// `openssl dgst` arguments: sign `message` with SHA-256 and `key`, into `signature`.
pub fn sign_args<'a>(key: &'a str, signature: &'a str, message: &'a str) -> [&'a str; 7] {
    ["dgst", "-sha256", "-sign", key, "-out", signature, message]
}

/// `openssl dgst` arguments: verify `signature` over `message` with SHA-256 and `public`.
pub fn verify_args<'a>(public: &'a str, signature: &'a str, message: &'a str) -> [&'a str; 7] {
    [
        "dgst",
        "-sha256",
        "-verify",
        public,
        "-signature",
        signature,
        message,
    ]
}
