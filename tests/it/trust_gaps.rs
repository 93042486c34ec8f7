//! The trust checks WebPKI leaves to its caller (issue 11), on chains the openssl CLI builds,
//! driven by curl and by `mtls-shield verify`: a CA key whose keyUsage lacks keyCertSign, a
//! client key whose keyUsage lacks digitalSignature, an RSA key the provider refuses, and CRLs
//! that are forged or superseded. The handshake and `verify` must give the same answer.
use crate::common::*;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// openssl helpers for the scripts below (bash functions). Keys are P-256 unless a test asks
/// for RSA, so the PKI is quick to make.
const OPENSSL_FNS: &str = r#"
set -euo pipefail
eckey() { openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
rsakey() { openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:"$2" -out "$1.key"; }
# root NAME SUBJECT [EXTRA -addext ARGS...]
root() {
  local name=$1 subj=$2; shift 2
  [ -e "$name.key" ] || eckey "$name"
  openssl req -x509 -new -key "$name.key" -sha256 -days 3650 -subj "$subj" \
    -addext "basicConstraints=critical,CA:TRUE" "$@" -out "$name.pem"
}
# issue NAME ISSUER SUBJECT EXT... : a certificate for NAME.key (made if missing), signed by ISSUER
issue() {
  local name=$1 issuer=$2 subj=$3; shift 3
  [ -e "$name.key" ] || eckey "$name"
  local args=()
  for e in "$@"; do args+=(-addext "$e"); done
  openssl req -new -key "$name.key" -sha256 -subj "$subj" "${args[@]}" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
    -days 365 -sha256 -copy_extensions copyall -out "$name.pem" 2>/dev/null
}
# crl_ca CA : the minimal `openssl ca` state to make CRLs signed by CA
crl_ca() {
  cat > "$1.cnf" <<EOF
[ ca ]
default_ca = d
[ d ]
database = $1.index
crlnumber = $1.crlnumber
certificate = $1.pem
private_key = $1.key
default_md = sha256
default_crl_days = 30
crl_extensions = crl_ext
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
  : > "$1.index"
  echo "${2:-01}" > "$1.crlnumber"
}
gencrl() { openssl ca -config "$1.cnf" -gencrl -out "$2" 2>/dev/null; }
revoke() { openssl ca -config "$1.cnf" -revoke "$2" -crl_reason keyCompromise 2>/dev/null; }
client_ext=("basicConstraints=critical,CA:FALSE" "extendedKeyUsage=clientAuth")
"#;

/// A folder with a root CA (`root.pem`, also `truststore.pem`) and a server certificate for
/// localhost, plus whatever `script` makes with the helpers above.
fn pki(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let full = format!(
        r#"{OPENSSL_FNS}
root root "/O=mtls-shield test/CN=Trust Gaps Root" -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
cp root.pem truststore.pem
issue server root "/CN=localhost" "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1"
{script}
"#
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(dir.path())
        .output()
        .expect("bash and openssl are installed");
    assert!(
        out.status.success(),
        "openssl script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn write_config(dir: &Path, up: &str, client_auth_extra: &str) -> PathBuf {
    let path = dir.join("mtls-shield.toml");
    std::fs::write(&path, config_with(up, "", client_auth_extra, "")).unwrap();
    path
}

/// curl with `NAME.pem` (leaf first, then any intermediates) and `NAME.key` from `dir`.
fn curl_as(dir: &Path, name: &str, proxy: &Proxy, extra: &[&str]) -> (i32, Vec<u8>, String) {
    let ca = dir.join("root.pem");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut args: Vec<&str> = extra.to_vec();
    let target = url(proxy, "/pets");
    args.extend([
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &target,
    ]);
    curl(&args)
}

/// `mtls-shield verify --config CONFIG CERT`: (exit code, stdout).
fn verify(config: &Path, cert: &Path) -> (i32, String) {
    let out = shield_cmd(&[
        OsStr::new("verify"),
        OsStr::new("--config"),
        config.as_os_str(),
        cert.as_os_str(),
    ]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The client `name` is refused with `reason` by the live handshake (empty reply, no
/// upstream request, a log line with the reason and `detail_has`) and by `verify`.
fn assert_refused_everywhere(dir: &Path, name: &str, reason: &str, detail_has: &str) {
    let up = Upstream::start();
    let config = write_config(dir, &up.url(), "");
    let proxy = Proxy::start(&config);
    let (code, body, stderr) = curl_as(dir, name, &proxy, &[]);
    assert_ne!(code, 0, "{name} was accepted: {stderr}");
    assert!(body.is_empty(), "{:?}", String::from_utf8_lossy(&body));
    let line = proxy.wait_log(&["handshake rejected", &format!("reason=\"{reason}\"")]);
    assert!(line.contains(detail_has), "{line}");
    assert_eq!(up.hits(), 0, "the upstream saw a request");

    let (code, out) = verify(&config, &dir.join(format!("{name}.pem")));
    assert_eq!(code, 2, "verify should refuse {name}:\n{out}");
    assert!(out.contains(&format!("result: refused: {reason}")), "{out}");
    assert!(out.contains(detail_has), "{out}");
}

/// The client `name` is accepted by the handshake and by `verify`.
fn assert_accepted_everywhere(dir: &Path, name: &str) {
    let up = Upstream::start();
    let config = write_config(dir, &up.url(), "");
    let proxy = Proxy::start(&config);
    let (code, body, stderr) = curl_as(dir, name, &proxy, &[]);
    assert_eq!(code, 0, "{name} was refused: {stderr}\n{:?}", proxy.logs());
    assert_eq!(String::from_utf8(body).unwrap(), mtls_shield::demo::PETS);
    assert_eq!(up.hits(), 1);
    let (code, out) = verify(&config, &dir.join(format!("{name}.pem")));
    assert_eq!(code, 0, "verify should accept {name}:\n{out}");
}

const INTERMEDIATES: &str = r#"
issue nosign root "/CN=No-Sign Issuing CA" "basicConstraints=critical,CA:TRUE" "keyUsage=critical,digitalSignature"
issue nosign-client nosign "/CN=client-of-nosign" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
cat nosign.pem >> nosign-client.pem
issue goodint root "/CN=Issuing CA" "basicConstraints=critical,CA:TRUE" "keyUsage=critical,keyCertSign,cRLSign"
issue goodint-client goodint "/CN=client-of-goodint" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
cat goodint.pem >> goodint-client.pem
"#;

#[test]
fn a_client_issued_by_a_ca_without_key_cert_sign_is_refused_as_unknown_ca() {
    let dir = pki(INTERMEDIATES);
    // OpenSSL agrees: "invalid CA certificate".
    let o = Command::new("openssl")
        .args(["verify", "-CAfile", "root.pem", "-untrusted", "nosign.pem"])
        .arg("nosign-client.pem")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success(), "openssl accepted the chain");
    assert_refused_everywhere(dir.path(), "nosign-client", "unknown_ca", "keyCertSign");
}

#[test]
fn a_client_issued_by_a_ca_with_key_cert_sign_is_accepted() {
    let dir = pki(INTERMEDIATES);
    assert_accepted_everywhere(dir.path(), "goodint-client");
}

const LEAF_USAGES: &str = r#"
issue keyenc root "/CN=key-encipherment-only" "${client_ext[@]}" "keyUsage=critical,keyEncipherment"
issue digsig root "/CN=digital-signature" "${client_ext[@]}" "keyUsage=critical,digitalSignature,keyEncipherment"
"#;

#[test]
fn a_client_whose_key_usage_lacks_digital_signature_is_refused_as_bad_purpose() {
    let dir = pki(LEAF_USAGES);
    assert_refused_everywhere(dir.path(), "keyenc", "bad_purpose", "digitalSignature");
}

#[test]
fn a_client_whose_key_usage_has_digital_signature_is_accepted() {
    let dir = pki(LEAF_USAGES);
    assert_accepted_everywhere(dir.path(), "digsig");
}

const RSA_KEYS: &str = r#"
rsakey rsa1024 1024
issue rsa1024 root "/CN=rsa-1024" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
rsakey rsa2048 2048
issue rsa2048 root "/CN=rsa-2048" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
"#;

/// OpenSSL's default security level refuses to load a 1024-bit key at all: this OpenSSL
/// config lowers it to 0 for curl, so that curl presents the key and the shield decides.
const WEAK_KEYS_OK: &str = r#"openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherString = DEFAULT:@SECLEVEL=0
"#;

#[test]
fn an_rsa_1024_client_is_refused_by_the_handshake_and_by_verify_alike() {
    let dir = pki(RSA_KEYS);
    let up = Upstream::start();
    let config = write_config(dir.path(), &up.url(), "");
    let proxy = Proxy::start(&config);
    let weak_ok = dir.path().join("weak-keys-ok.cnf");
    std::fs::write(&weak_ok, WEAK_KEYS_OK).unwrap();
    let mut errors = Vec::new();
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let d = dir.path();
        let out = Command::new("curl")
            .env("OPENSSL_CONF", &weak_ok)
            .args(["-sS", "--max-time", "20"])
            .args(version)
            .arg("--cacert")
            .arg(d.join("root.pem"))
            .arg("--cert")
            .arg(d.join("rsa1024.pem"))
            .arg("--key")
            .arg(d.join("rsa1024.key"))
            .arg(url(&proxy, "/pets"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{version:?}: accepted: {stderr}");
        assert!(out.stdout.is_empty());
        errors.push(stderr);
    }
    let rejected = || -> Vec<String> {
        proxy
            .logs()
            .into_iter()
            .filter(|l| l.contains("handshake rejected") && l.contains("CN=rsa-1024"))
            .collect()
    };
    let mut lines = Vec::new();
    let end = std::time::Instant::now() + DEADLINE;
    while std::time::Instant::now() < end {
        lines = rejected();
        if lines.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        lines.len(),
        2,
        "curl said {errors:?}; the proxy logged {:?}",
        proxy.logs()
    );
    for (l, version) in lines.iter().zip(["TLSv1.2", "TLSv1.3"]) {
        assert!(l.contains(version), "{l}");
    }
    for l in &lines {
        assert!(l.contains("reason=\"bad_signature\""), "{l}");
        assert!(l.contains("RSA 1024-bit"), "{l}");
    }
    assert_eq!(up.hits(), 0);

    let (code, out) = verify(&config, &dir.path().join("rsa1024.pem"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("result: refused: bad_signature"), "{out}");
    assert!(out.contains("RSA 1024-bit"), "{out}");
}

#[test]
fn an_rsa_2048_client_is_accepted_by_the_handshake_and_by_verify_alike() {
    let dir = pki(RSA_KEYS);
    assert_accepted_everywhere(dir.path(), "rsa2048");
}

/// Two CRLs of the root (number 1 lists nobody; number 2, made later, revokes `victim`), a
/// forger CA with the root's name and key identifier but its own key, and its CRL.
const CRLS: &str = r#"
issue victim root "/CN=victim" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
issue bystander root "/CN=bystander" "${client_ext[@]}" "keyUsage=critical,digitalSignature"
crl_ca root 01
gencrl root older.crl
revoke root victim.pem
gencrl root newer.crl
ski=$(openssl x509 -in root.pem -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' ')
root forger "/O=mtls-shield test/CN=Trust Gaps Root" -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=$ski"
crl_ca forger 99
gencrl forger forged.crl
"#;

#[test]
fn a_forged_crl_stops_start_up_naming_the_crl_file() {
    let dir = pki(CRLS);
    // It really does name the trusted CA and carry its key identifier.
    let text = Command::new("openssl")
        .args(["crl", "-in", "forged.crl", "-noout", "-text"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let root_ski = Command::new("openssl")
        .args([
            "x509",
            "-in",
            "root.pem",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let ski = String::from_utf8_lossy(&root_ski.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CN = Trust Gaps Root") && text.contains(&ski),
        "{text}"
    );

    let config = write_config(dir.path(), "http://127.0.0.1:9", "crls = [\"forged.crl\"]");
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let forged = dir.path().join("forged.crl").display().to_string();
    assert!(stderr.contains(&forged), "{stderr}");
    assert!(stderr.contains("signed by another key"), "{stderr}");
}

#[test]
fn check_reports_a_forged_crl_as_an_error_naming_the_file() {
    let dir = pki(CRLS);
    let config = write_config(dir.path(), "http://127.0.0.1:9", "crls = [\"forged.crl\"]");
    let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let forged = dir.path().join("forged.crl").display().to_string();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains(&forged))
        .unwrap_or_else(|| panic!("no error line naming {forged}:\n{stdout}"));
    assert!(line.contains("signed by another key"), "{line}");
}

#[test]
fn a_forged_crl_listed_before_the_genuine_one_is_refused_rather_than_read_first() {
    let dir = pki(CRLS);
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "crls = [\"forged.crl\", \"newer.crl\"]",
    );
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("forged.crl"), "{stderr}");
}

#[test]
fn the_newest_crl_of_an_issuer_is_used_whatever_the_order_of_the_list() {
    let dir = pki(CRLS);
    for crls in [
        "crls = [\"older.crl\", \"newer.crl\"]",
        "crls = [\"newer.crl\", \"older.crl\"]",
    ] {
        let up = Upstream::start();
        let config = write_config(dir.path(), &up.url(), crls);
        let proxy = Proxy::start(&config);
        let (code, _, _) = curl_as(dir.path(), "victim", &proxy, &[]);
        assert_ne!(code, 0, "{crls}: the revoked client got in");
        proxy.wait_log(&["handshake rejected", "reason=\"revoked\"", "CN=victim"]);
        let (code, _, stderr) = curl_as(dir.path(), "bystander", &proxy, &[]);
        assert_eq!(code, 0, "{crls}: {stderr}");
        assert_eq!(up.hits(), 1);

        let out = shield_cmd(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let older = dir.path().join("older.crl").display().to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("warning: crl_superseded: ") && l.contains(&older)),
            "{crls}:\n{stdout}"
        );
        assert!(
            stdout.contains("    signature: verified with the truststore CA"),
            "{stdout}"
        );
    }
}

#[test]
fn a_reload_that_brings_a_forged_crl_keeps_the_last_good_state() {
    let dir = pki(CRLS);
    std::fs::copy(dir.path().join("newer.crl"), dir.path().join("in-use.crl")).unwrap();
    let up = Upstream::start();
    let config = write_config(dir.path(), &up.url(), "crls = [\"in-use.crl\"]");
    let proxy = Proxy::start(&config);
    std::fs::copy(dir.path().join("forged.crl"), dir.path().join("in-use.crl")).unwrap();
    proxy.signal("HUP");
    let line = proxy.wait_log(&["reload failed"]);
    assert!(
        line.contains("in-use.crl") && line.contains("signed by another key"),
        "{line}"
    );
    // The genuine CRL is still in force: the victim stays out, the bystander gets in.
    assert_ne!(curl_as(dir.path(), "victim", &proxy, &[]).0, 0);
    assert_eq!(curl_as(dir.path(), "bystander", &proxy, &[]).0, 0);
}

#[test]
fn a_crl_with_an_unknown_critical_extension_is_refused_naming_the_crl_file() {
    let dir = pki(r#"
crl_ca root 01
printf '1.3.6.1.4.1.55555.1 = critical,ASN1:NULL\n' >> root.cnf
gencrl root odd.crl
"#);
    let config = write_config(dir.path(), "http://127.0.0.1:9", "crls = [\"odd.crl\"]");
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let odd = dir.path().join("odd.crl").display().to_string();
    assert!(stderr.contains(&odd), "{stderr}");
    let truststore = dir.path().join("truststore.pem").display().to_string();
    assert!(!stderr.contains(&truststore), "{stderr}");
}

#[test]
fn a_huge_common_name_is_capped_in_the_connection_log() {
    let pki = Pki::new();
    let up = Upstream::start();
    let config = pki.write_config(
        &up.url(),
        "[client_auth.allow]\ncommon_names = [\"someone-else\"]",
    );
    let proxy = Proxy::start(&config);
    let cn = "x".repeat(10_000);
    let huge = pki.root.issue(Leaf::client(&cn));
    let a = block_attempt(
        proxy.addr,
        &pki.root,
        &ClientOpts::with(ClientCert::leaf(&huge)),
    );
    assert!(a.received.is_empty());
    let line = proxy.wait_log(&["handshake rejected", "reason=\"not_allowed\""]);
    assert!(line.len() < 2048, "a {}-byte log line", line.len());
    assert!(line.contains("more bytes]"), "{line}");
    assert_eq!(up.hits(), 0);
}

/// Partitions made by `openssl ca` itself (its issuingDistributionPoint syntax), as a CA's own
/// tooling makes them: each client's partition decides, in either order of the files.
#[test]
fn openssl_made_partitions_each_cover_their_own_clients() {
    let dir = pki(r#"
crl_ca root 01
printf '[ p1 ]\nauthorityKeyIdentifier = keyid:always\nissuingDistributionPoint = critical, @idp1\n[ idp1 ]\nfullname = URI:http://pki.example/p1.crl\nonlyuser = TRUE\n' >> root.cnf
printf '[ p2 ]\nauthorityKeyIdentifier = keyid:always\nissuingDistributionPoint = critical, @idp2\n[ idp2 ]\nfullname = URI:http://pki.example/p2.crl\nonlyuser = TRUE\n' >> root.cnf
issue victim root "/CN=victim" "${client_ext[@]}" "crlDistributionPoints=URI:http://pki.example/p1.crl"
issue bystander root "/CN=bystander" "${client_ext[@]}" "crlDistributionPoints=URI:http://pki.example/p2.crl"
openssl ca -config root.cnf -gencrl -crlexts p2 -out p2.crl 2>/dev/null
revoke root victim.pem
openssl ca -config root.cnf -gencrl -crlexts p1 -out p1.crl 2>/dev/null
"#);
    for order in [r#"["p1.crl", "p2.crl"]"#, r#"["p2.crl", "p1.crl"]"#] {
        let config = write_config(
            dir.path(),
            "http://127.0.0.1:9",
            &format!("crls = {order}\nrequire_crl = true"),
        );
        let proxy = Proxy::start(&config);
        assert_ne!(curl_as(dir.path(), "victim", &proxy, &[]).0, 0, "{order}");
        proxy.wait_log(&["handshake rejected", "reason=\"revoked\"", "CN=victim"]);
        let (code, _, err) = curl_as(dir.path(), "bystander", &proxy, &["-o", "/dev/null"]);
        // The upstream is a closed port: 502 from the shield means the handshake passed.
        assert_eq!(code, 0, "{order}: {err}");
    }
}

/// A CRL partitioned by revocation reason (IDP onlySomeReasons) cannot be honoured: it is
/// refused at start-up with the file and the reason, never silently ignored.
#[test]
fn a_crl_partitioned_by_reason_is_refused_naming_the_file_and_why() {
    let dir = pki(r#"
crl_ca root 01
printf '[ reasons ]\nissuingDistributionPoint = critical, @idp\n[ idp ]\nfullname = URI:http://pki.example/kc.crl\nonlysomereasons = keyCompromise\n' >> root.cnf
openssl ca -config root.cnf -gencrl -crlexts reasons -out kc.crl 2>/dev/null
"#);
    let config = write_config(dir.path(), "http://127.0.0.1:9", "crls = [\"kc.crl\"]");
    let out = shield_cmd(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let kc = dir.path().join("kc.crl").display().to_string();
    assert!(stderr.contains(&kc), "{stderr}");
    assert!(
        stderr.contains("partitioned by revocation reason"),
        "{stderr}"
    );
}
