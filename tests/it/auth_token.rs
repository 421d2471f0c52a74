//! `auth.token` (issue 7): bearer JWTs minted here, signed by RSA and EC keys whose self-signed
//! certificates (made with the `openssl` CLI) form the `rootcertbundle`, or by a leaf that a
//! bundle CA signed, named in the token's `x5c` header. Checks good tokens, the challenge and
//! its scope, expired, wrong issuer, wrong audience, insufficient scope, a foreign signer, HMAC
//! and malformed tokens. A missing `openssl` fails the test with an install hint.

use crate::common;
use crate::common::tools::{require, run_ok};
use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REALM: &str = "https://auth.example.test/token";
const SERVICE: &str = "stevedore-test";
const ISSUER: &str = "test-token-issuer";

struct Keys {
    _tmp: tempfile::TempDir,
    bundle: PathBuf,
    rsa: EncodingKey,
    ec: EncodingKey,
    /// Not in the bundle.
    rogue: EncodingKey,
    /// Signed by `ca` (in the bundle); its own certificate is not.
    leaf: EncodingKey,
    leaf_der_b64: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

fn keys() -> Keys {
    require("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let self_signed = |name: &str| {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        );
    };
    for name in ["rsa", "rogue", "ca"] {
        openssl(
            d,
            &[
                "genrsa",
                "-traditional",
                "-out",
                &format!("{name}.key"),
                "2048",
            ],
        );
        self_signed(name);
    }
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.key",
        ],
    );
    self_signed("ec");
    openssl(d, &["genrsa", "-traditional", "-out", "leaf.key", "2048"]);
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints = CA:false\nkeyUsage = critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "req", "-new", "-key", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.crt",
            "-days",
            "2",
            // X.509 v3 (v1 certificates are refused in x5c chains).
            "-extfile",
            "leaf.ext",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-in", "leaf.crt", "-outform", "DER", "-out", "leaf.der",
        ],
    );
    let mut bundle = String::new();
    for name in ["rsa", "ec", "ca"] {
        bundle.push_str(&std::fs::read_to_string(d.join(format!("{name}.crt"))).unwrap());
    }
    let bundle_path = d.join("bundle.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    // jsonwebtoken takes DER keys: PKCS#1 for RSA, PKCS#8 for EC.
    for name in ["rsa", "rogue", "leaf"] {
        openssl(
            d,
            &[
                "rsa",
                "-in",
                &format!("{name}.key"),
                "-traditional",
                "-outform",
                "DER",
                "-out",
                &format!("{name}.key.der"),
            ],
        );
    }
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "ec.key",
            "-outform",
            "DER",
            "-out",
            "ec.key.der",
        ],
    );
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();
    use base64::Engine as _;
    Keys {
        bundle: bundle_path,
        rsa: EncodingKey::from_rsa_der(&read("rsa.key.der")),
        ec: EncodingKey::from_ec_der(&read("ec.key.der")),
        rogue: EncodingKey::from_rsa_der(&read("rogue.key.der")),
        leaf: EncodingKey::from_rsa_der(&read("leaf.key.der")),
        leaf_der_b64: base64::engine::general_purpose::STANDARD.encode(read("leaf.der")),
        _tmp: tmp,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a token valid for a minute granting `access` (`[(name, [actions])]`).
fn claims(access: &[(&str, &[&str])]) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "tester",
        "aud": SERVICE,
        "exp": now() + 60,
        "nbf": now() - 5,
        "iat": now() - 5,
        "jti": "x",
        "access": access.iter().map(|(name, actions)| {
            let kind = if *name == "catalog" { "registry" } else { "repository" };
            json!({"type": kind, "name": name, "actions": actions})
        }).collect::<Vec<_>>(),
    })
}

fn mint(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn server(k: &Keys) -> Server {
    Server::start_with(Options {
        extra_yaml: format!(
            "storage:\n  delete:\n    enabled: true\nauth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            k.bundle.display()
        ),
        ..Options::default()
    })
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A request with an optional bearer token.
fn req(method: reqwest::Method, url: String, token: Option<&str>) -> reqwest::RequestBuilder {
    let b = client().request(method, url);
    match token {
        Some(t) => b.bearer_auth(t),
        None => b,
    }
}

#[tokio::test]
async fn good_tokens_and_challenges() {
    let k = keys();
    let s = server(&k);
    let get = reqwest::Method::GET;

    // No token: 401 with the Bearer challenge, naming the scope the request needs.
    let r = req(get.clone(), s.url("/v2/"), None).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
    );
    let r = req(get.clone(), s.url("/v2/team/app/manifests/v1"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        format!(
            "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull\""
        )
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(
        v["errors"][0]["detail"],
        json!([{"Type": "repository", "Name": "team/app", "Action": "pull"}])
    );

    // An RS256 token with push: push an image.
    let push = mint(
        Algorithm::RS256,
        &k.rsa,
        &claims(&[("team/app", &["pull", "push"])]),
    );
    let r = req(get.clone(), s.url("/v2/"), Some(&push))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let manifest = push_image_with_token(&s, &push).await;

    // An ES256 pull-only token, and a `*` token: pull.
    let pull_ec = mint(Algorithm::ES256, &k.ec, &claims(&[("team/app", &["pull"])]));
    let star = mint(Algorithm::RS256, &k.rsa, &claims(&[("team/app", &["*"])]));
    for t in [&pull_ec, &star] {
        let r = req(get.clone(), s.url("/v2/team/app/manifests/v1"), Some(t))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), manifest.as_slice());
    }

    // A token signed by a leaf whose chain (x5c) leads to a bundle CA.
    let mut h = Header::new(Algorithm::RS256);
    h.x5c = Some(vec![k.leaf_der_b64.clone()]);
    let chained = jsonwebtoken::encode(&h, &claims(&[("team/app", &["pull"])]), &k.leaf).unwrap();
    let r = req(get.clone(), s.url("/v2/team/app/tags/list"), Some(&chained))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // …but the leaf's key alone (no x5c) is not trusted.
    let unchained = mint(
        Algorithm::RS256,
        &k.leaf,
        &claims(&[("team/app", &["pull"])]),
    );
    let r = req(
        get.clone(),
        s.url("/v2/team/app/tags/list"),
        Some(&unchained),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);

    // The catalog needs registry:catalog:*.
    let r = req(get.clone(), s.url("/v2/_catalog"), Some(&star))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).ends_with(",scope=\"registry:catalog:*\",error=\"insufficient_scope\""),
        "{}",
        challenge(&r)
    );
    let cat = mint(Algorithm::ES256, &k.ec, &claims(&[("catalog", &["*"])]));
    let r = req(get.clone(), s.url("/v2/_catalog"), Some(&cat))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Delete needs "delete" ("*" has it).
    let r = req(
        reqwest::Method::DELETE,
        s.url("/v2/team/app/manifests/v1"),
        Some(&push),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("scope=\"repository:team/app:delete\""));
    let r = req(
        reqwest::Method::DELETE,
        s.url("/v2/team/app/manifests/v1"),
        Some(&star),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let k = keys();
    let s = server(&k);
    let url = s.url("/v2/team/app/tags/list");
    let pull = &[("team/app", &["pull"][..])][..];
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(pull);
        f(&mut c);
        c
    };
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(pull),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let unsigned = {
        let good = mint(Algorithm::RS256, &k.rsa, &claims(pull));
        let mut parts: Vec<&str> = good.split('.').collect();
        // {"alg":"none","typ":"JWT"}
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        format!("{}.{}.", parts[0], parts[1])
    };
    let tampered = {
        let good = mint(Algorithm::RS256, &k.rsa, &claims(pull));
        let other = mint(
            Algorithm::RS256,
            &k.rsa,
            &claims(&[("team/app", &["pull", "push", "delete"])]),
        );
        let g: Vec<&str> = good.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        format!("{}.{}.{}", g[0], o[1], g[2])
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            mint(
                Algorithm::RS256,
                &k.rsa,
                &with(&|c| c["exp"] = json!(now() - 3600)),
            ),
        ),
        (
            "not yet valid",
            mint(
                Algorithm::ES256,
                &k.ec,
                &with(&|c| c["nbf"] = json!(now() + 3600)),
            ),
        ),
        (
            "wrong issuer",
            mint(
                Algorithm::RS256,
                &k.rsa,
                &with(&|c| c["iss"] = json!("someone-else")),
            ),
        ),
        (
            "wrong audience",
            mint(
                Algorithm::RS256,
                &k.rsa,
                &with(&|c| c["aud"] = json!(["other-service"])),
            ),
        ),
        (
            "no exp",
            mint(
                Algorithm::RS256,
                &k.rsa,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "foreign signer",
            mint(Algorithm::RS256, &k.rogue, &claims(pull)),
        ),
        ("hmac", hmac),
        ("alg none", unsigned),
        ("tampered claims", tampered),
        ("malformed", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
    ];
    for (what, token) in cases {
        let r = req(reqwest::Method::GET, url.clone(), Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            challenge(&r),
            format!(
                "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull\",error=\"invalid_token\""
            ),
            "{what}"
        );
    }
    // An audience list that includes the service is fine.
    let t = mint(
        Algorithm::RS256,
        &k.rsa,
        &with(&|c| c["aud"] = json!(["other", SERVICE])),
    );
    let r = req(reqwest::Method::GET, url.clone(), Some(&t))
        .send()
        .await
        .unwrap();
    // Authorized; the repository does not exist.
    assert_eq!(r.status(), 404);
}

/// Docker Hub, Harbor's public projects and docker_auth's anonymous rules issue tokens with an
/// empty (or no) `sub`: their `access` claim decides, as in distribution. What they do not
/// grant gets 401 `insufficient_scope` naming the scope, so the client fetches a better token.
#[tokio::test]
async fn anonymous_tokens_are_judged_by_their_claims() {
    let k = keys();
    let s = server(&k);
    let push = mint(
        Algorithm::RS256,
        &k.rsa,
        &claims(&[("team/app", &["pull", "push"])]),
    );
    push_image_with_token(&s, &push).await;
    let mut empty_sub = claims(&[("team/app", &["pull"])]);
    empty_sub["sub"] = json!("");
    let mut no_sub = claims(&[("team/app", &["pull"])]);
    no_sub.as_object_mut().unwrap().remove("sub");
    for c in [empty_sub, no_sub] {
        let t = mint(Algorithm::RS256, &k.rsa, &c);
        let r = req(
            reqwest::Method::GET,
            s.url("/v2/team/app/manifests/v1"),
            Some(&t),
        )
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{c}");
        let r = req(
            reqwest::Method::GET,
            s.url("/v2/team/app/tags/list"),
            Some(&t),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{c}");
        let r = req(
            reqwest::Method::POST,
            s.url("/v2/team/app/blobs/uploads/"),
            Some(&t),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 401, "{c}");
        assert_eq!(
            challenge(&r),
            format!(
                "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\""
            )
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
    }
}

/// Pushes team/app:v1 (an empty config, no layers) with `token`, which must grant push;
/// returns the manifest.
async fn push_image_with_token(s: &Server, token: &str) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = digest(&config);
    let r = req(
        reqwest::Method::POST,
        s.url(&format!("/v2/team/app/blobs/uploads/?digest={cd}")),
        Some(token),
    )
    .body(config.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[]);
    let r = req(
        reqwest::Method::PUT,
        s.url("/v2/team/app/manifests/v1"),
        Some(token),
    )
    .header("content-type", OCI_MANIFEST)
    .body(manifest.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    manifest
}

#[tokio::test]
async fn insufficient_scope_names_what_is_needed() {
    let k = keys();
    let s = server(&k);
    let pull_only = mint(
        Algorithm::RS256,
        &k.rsa,
        &claims(&[("team/app", &["pull"])]),
    );
    let data = b"blob".to_vec();
    let d = digest(&data);
    // Pushing with a pull-only token.
    let r = req(
        reqwest::Method::POST,
        s.url(&format!("/v2/team/app/blobs/uploads/?digest={d}")),
        Some(&pull_only),
    )
    .body(data.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        challenge(&r),
        format!(
            "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\""
        )
    );
    // Another repository than the token's.
    let r = req(
        reqwest::Method::GET,
        s.url("/v2/team/other/tags/list"),
        Some(&pull_only),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).contains("scope=\"repository:team/other:pull\",error=\"insufficient_scope\"")
    );

    // A mount needs pull on the source too.
    let push_b = mint(
        Algorithm::RS256,
        &k.rsa,
        &claims(&[("team/b", &["pull", "push"])]),
    );
    let mount = s.url(&format!(
        "/v2/team/b/blobs/uploads/?mount={d}&from=team/app"
    ));
    let r = req(reqwest::Method::POST, mount.clone(), Some(&push_b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        challenge(&r).contains(
            "scope=\"repository:team/b:pull,push repository:team/app:pull\",error=\"insufficient_scope\""
        ),
        "{}",
        challenge(&r)
    );
    let both = mint(
        Algorithm::RS256,
        &k.rsa,
        &claims(&[
            ("team/b", &["pull", "push"]),
            ("team/app", &["pull", "push"]),
        ]),
    );
    let r = req(
        reqwest::Method::POST,
        s.url(&format!("/v2/team/app/blobs/uploads/?digest={d}")),
        Some(&both),
    )
    .body(data)
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = req(reqwest::Method::POST, mount, Some(&both))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "mounted");
}

#[test]
fn a_bundle_without_certificates_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, "not a certificate\n").unwrap();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tmp.path().join("data").display(),
            bundle.display()
        ),
    )
    .unwrap();
    let out = common::tools::run(Command::new(BIN).arg("serve").arg(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.token.rootcertbundle"), "{err}");
}

/// A certificate made with openssl in `dir`: `name.key` (P-256), `name.crt` with the extension
/// lines `ext`, self-signed or signed by `issuer`; returns the base64 DER (for `x5c`) and the
/// PKCS#8 DER key.
fn ec_cert(dir: &Path, name: &str, issuer: Option<&str>, ext: &str) -> (String, EncodingKey) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
    let ext = format!("{ext}\nsubjectKeyIdentifier = hash\n");
    match issuer {
        None => {
            let cnf = format!(
                "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = {name}\n[ext]\n{ext}"
            );
            std::fs::write(dir.join(format!("{name}.cnf")), cnf).unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "2",
                    "-config",
                    &format!("{name}.cnf"),
                ],
            );
        }
        Some(issuer) => {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    &format!("/CN={name}"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{issuer}.crt"),
                    "-CAkey",
                    &format!("{issuer}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
        }
    }
    for (args, out) in [
        (
            vec!["x509", "-in", &format!("{name}.crt"), "-outform", "DER"],
            format!("{name}.crt.der"),
        ),
        (
            vec![
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{name}.key"),
                "-outform",
                "DER",
            ],
            format!("{name}.key.der"),
        ),
    ] {
        let mut args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        args.extend(["-out", &out]);
        openssl(dir, &args);
    }
    use base64::Engine as _;
    let read = |n: String| std::fs::read(dir.join(n)).unwrap();
    (
        base64::engine::general_purpose::STANDARD.encode(read(format!("{name}.crt.der"))),
        EncodingKey::from_ec_der(&read(format!("{name}.key.der"))),
    )
}

#[tokio::test]
async fn x5c_chains_are_validated_as_pki() {
    require("openssl", "openssl");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ca = "basicConstraints = critical,CA:true\nkeyUsage = critical,keyCertSign,cRLSign";
    let leaf = "basicConstraints = CA:false\nkeyUsage = critical,digitalSignature";
    ec_cert(d, "root", None, ca);
    let (good_ca, _) = ec_cert(d, "goodca", Some("root"), ca);
    let (good_leaf, good_key) = ec_cert(d, "goodleaf", Some("goodca"), leaf);
    let (not_ca, _) = ec_cert(d, "notca", Some("root"), "basicConstraints = CA:false");
    let (under_not_ca, under_not_ca_key) = ec_cert(d, "undernotca", Some("notca"), leaf);
    let (no_sign_ca, _) = ec_cert(
        d,
        "nosignca",
        Some("root"),
        "basicConstraints = critical,CA:true\nkeyUsage = critical,digitalSignature",
    );
    let (under_no_sign, under_no_sign_key) = ec_cert(d, "undernosign", Some("nosignca"), leaf);
    let (encipher_leaf, encipher_key) = ec_cert(
        d,
        "encipherleaf",
        Some("goodca"),
        "basicConstraints = CA:false\nkeyUsage = critical,keyAgreement",
    );
    // webpki (like browsers) does not hold a trust anchor's own constraints against the chain:
    // the limit is an intermediate's.
    let (short_ca, _) = ec_cert(
        d,
        "shortca",
        Some("root"),
        "basicConstraints = critical,CA:true,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign",
    );
    let (too_deep_ca, _) = ec_cert(d, "toodeepca", Some("shortca"), ca);
    let (too_deep, too_deep_key) = ec_cert(d, "toodeep", Some("toodeepca"), leaf);
    let bundle = std::fs::read_to_string(d.join("root.crt")).unwrap();
    let bundle_path = d.join("bundle.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    let s = Server::start_with(Options {
        extra_yaml: format!(
            "auth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            bundle_path.display()
        ),
        ..Options::default()
    });
    let url = s.url("/v2/team/app/tags/list");
    let status = |chain: Vec<String>, key: EncodingKey| {
        let url = url.clone();
        async move {
            let mut h = Header::new(Algorithm::ES256);
            h.x5c = Some(chain);
            let t = jsonwebtoken::encode(&h, &claims(&[("team/app", &["pull"])]), &key).unwrap();
            req(reqwest::Method::GET, url, Some(&t))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Authorized; the repository does not exist.
    assert_eq!(
        status(vec![good_leaf, good_ca.clone()], good_key).await,
        404
    );
    let refused = [
        (
            "non-CA intermediate",
            vec![under_not_ca, not_ca],
            under_not_ca_key,
        ),
        (
            "intermediate without keyCertSign",
            vec![under_no_sign, no_sign_ca],
            under_no_sign_key,
        ),
        (
            "leaf without digitalSignature",
            vec![encipher_leaf, good_ca],
            encipher_key,
        ),
        (
            "path length exceeded",
            vec![too_deep, too_deep_ca, short_ca],
            too_deep_key,
        ),
    ];
    for (what, chain, key) in refused {
        assert_eq!(status(chain, key).await, 401, "{what}");
    }
    for why in [
        "a CA of the chain's key usage does not allow signing certificates",
        "the leaf's key usage does not allow digital signatures",
        "path length",
    ] {
        // The refusal is logged as the response goes out: wait for the line, not the answer.
        let logged = eventually(Duration::from_secs(10), || s.log_text().contains(why)).await;
        let log = s.log_text();
        assert!(
            logged,
            "no {why:?} in the log:\n{}",
            log.lines()
                .filter(|l| l.contains("x5c"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
