//! Test certificates made by the `openssl` command line, an implementation independent of
//! ours: a root, an intermediate it signs, and leaves the intermediate signs. Made once per
//! test binary in a fresh temporary directory that is removed afterwards.

use std::sync::OnceLock;

use crate::provider::test_openssl::{TempDir, openssl, openssl_rsa_key};

/// The company UnionPay's signer CN names.
pub const COMPANY: &str = "中国银联股份有限公司";
/// The serial of the merchant certificate (the UnionPay test merchant's, as it happens).
pub const MERCHANT_SERIAL: &str = "69903319369";

pub struct Pki {
    pub root_pem: String,
    pub intermediate_pem: String,
    /// UnionPay's signer: CN `041@8310000000083040@中国银联股份有限公司@00016495`.
    /// Valid for a year.
    pub signer_pem: String,
    pub signer_key_pem: String,
    pub signer_public_pem: String,
    /// The signer's name and issuer, valid from a second before the intermediate is.
    pub early_pem: String,
    /// The signer's name and issuer, but valid for 20 years: it outlives the root.
    pub long_lived_pem: String,
    pub long_lived_key_pem: String,
    /// Issued by the intermediate, but to another company.
    pub other_company_pem: String,
    pub other_company_key_pem: String,
    /// The right CN, but issued by the root directly rather than by the intermediate.
    pub root_issued_pem: String,
    pub root_issued_key_pem: String,
    /// Our merchant signing certificate, serial [`MERCHANT_SERIAL`].
    pub merchant_cert_pem: String,
    pub merchant_key_pem: String,
    pub merchant_public_pem: String,
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";

/// Makes `{name}.pem` for `subject`, valid for `days`, signed by `issuer` (itself when `None`).
fn cert(dir: &TempDir, name: &str, subject: &str, issuer: Option<&str>, days: u32, serial: &str) {
    let (key_file, csr) = (format!("{name}.key"), format!("{name}.csr"));
    openssl_rsa_key(dir, &key_file, &format!("{name}.pub"));
    let ext_file = format!("{name}.ext");
    let ext = if name.starts_with("ca-") {
        CA_EXT
    } else {
        LEAF_EXT
    };
    dir.write(&ext_file, ext);
    openssl(
        &dir.0,
        &[
            "req", "-new", "-utf8", "-key", &key_file, "-subj", subject, "-out", &csr,
        ],
    );
    sign_csr(dir, name, issuer, days, serial);
}

/// Issues `{name}.pem` from the existing `{name}.csr` (again, when it exists already).
fn sign_csr(dir: &TempDir, name: &str, issuer: Option<&str>, days: u32, serial: &str) {
    let (key_file, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let ext_file = format!("{name}.ext");
    let days = days.to_string();
    let ca_pem = format!("{}.pem", issuer.unwrap_or_default());
    let ca_key = format!("{}.key", issuer.unwrap_or_default());
    let mut args = vec![
        "x509",
        "-req",
        "-sha256",
        "-days",
        &days,
        "-in",
        &csr,
        "-extfile",
        &ext_file,
        "-set_serial",
        serial,
        "-out",
        &pem,
    ];
    match issuer {
        Some(_) => args.extend(["-CA", &ca_pem, "-CAkey", &ca_key]),
        None => args.extend(["-signkey", &key_file]),
    }
    openssl(&dir.0, &args);
}

fn make() -> Pki {
    let dir = TempDir::new("unionpay-pki");
    let signer = format!("/C=cn/O=CFCA OCA1/CN=041@8310000000083040@{COMPANY}@00016495");
    let other = "/C=cn/O=CFCA OCA1/CN=041@8310000000083040@Some Other Company@00016495";
    let merchant = "/C=cn/O=CFCA OCA1/CN=041@Z2014-11-11@700000000000001:SIGN@00000003";
    let (root, intermediate) = ("ca-root", "ca-intermediate");
    cert(
        &dir,
        root,
        "/C=CN/O=Test Root CA/CN=Test Root",
        None,
        3650,
        "1",
    );
    cert(
        &dir,
        intermediate,
        "/C=CN/O=Test CA/CN=Test OCA1",
        Some(root),
        3650,
        "2",
    );
    // Issued by the intermediate's key before the intermediate certificate we trust, which is
    // re-issued (same key and name) a second later: the chain starts after this leaf does.
    cert(&dir, "early", &signer, Some(intermediate), 365, "6");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sign_csr(&dir, intermediate, Some(root), 3650, "7");
    cert(
        &dir,
        "signer",
        &signer,
        Some(intermediate),
        365,
        "69678957876",
    );
    cert(&dir, "long", &signer, Some(intermediate), 7300, "5");
    cert(&dir, "other", other, Some(intermediate), 365, "3");
    cert(&dir, "direct", &signer, Some(root), 365, "4");
    cert(
        &dir,
        "merchant",
        merchant,
        Some(intermediate),
        365,
        MERCHANT_SERIAL,
    );
    Pki {
        root_pem: dir.read("ca-root.pem"),
        intermediate_pem: dir.read("ca-intermediate.pem"),
        signer_pem: dir.read("signer.pem"),
        signer_key_pem: dir.read("signer.key"),
        signer_public_pem: dir.read("signer.pub"),
        early_pem: dir.read("early.pem"),
        long_lived_pem: dir.read("long.pem"),
        long_lived_key_pem: dir.read("long.key"),
        other_company_pem: dir.read("other.pem"),
        other_company_key_pem: dir.read("other.key"),
        root_issued_pem: dir.read("direct.pem"),
        root_issued_key_pem: dir.read("direct.key"),
        merchant_cert_pem: dir.read("merchant.pem"),
        merchant_key_pem: dir.read("merchant.key"),
        merchant_public_pem: dir.read("merchant.pub"),
    }
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make)
}

/// notBefore and notAfter of a PEM certificate, as Unix seconds, read by openssl.
pub fn validity_s(cert_pem: &str) -> (i64, i64) {
    let dir = TempDir::new("unionpay-dates");
    dir.write("c.pem", cert_pem);
    let out = openssl(
        &dir.0,
        &[
            "x509",
            "-in",
            "c.pem",
            "-noout",
            "-startdate",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let date = |prefix: &str| {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("date line");
        // "2025-07-31 01:19:16Z"
        let rfc3339 = line.trim().replacen(' ', "T", 1);
        crate::domain::Timestamp::parse_rfc3339(&rfc3339)
            .expect("openssl date")
            .unix_s()
    };
    (date("notBefore="), date("notAfter="))
}
