//! `deploy/kubernetes/`: every kustomization renders (`kubectl kustomize`) and the result
//! passes the Kubernetes schemas (kubernetes-validate, strict, offline: the schemas ship in
//! the package); the config.yml of every rendered ConfigMap passes `stevedore config check`
//! with the `REGISTRY_*` variables of the containers that mount it; and the objects fit
//! together (selectors, ports, probes, Secrets, the peers' Service, the node tier's upstream,
//! the containerd hosts.toml examples). Both tools are installed by
//! scripts/install-test-deps.sh; a machine without them fails here rather than skip.

use crate::common::BIN;
use crate::common::tools::{on_path, run};
use serde::Deserialize as _;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every kustomization (not component) under deploy/kubernetes/, relative to it.
const KUSTOMIZATIONS: &[&str] = &["single", "regional", "node", "overlays/fleet"];
/// Kubernetes versions the render is validated against: an older one still supported by
/// the managed offerings, and the newest whose schemas kubernetes-validate ships.
const K8S_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];
/// Secrets the user creates (deploy/kubernetes/README.md), referenced but not rendered.
const EXTERNAL_SECRETS: &[&str] = &["stevedore-htpasswd", "stevedore-dockerhub"];
/// Kinds without a schema in kubernetes-validate (CRDs), checked by hand below.
const CRD_KINDS: &[&str] = &["PodMonitor"];

fn kube_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn render(dir: &str) -> Vec<Value> {
    assert!(
        on_path("kubectl"),
        "`kubectl` is not on PATH: run scripts/install-test-deps.sh"
    );
    let out = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(kube_dir().join(dir)));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    assert!(!docs.is_empty(), "{dir} renders nothing");
    docs
}

/// Runs kubernetes-validate (strict) on `file` for `version`: (passed, what it said).
fn kubernetes_validate(file: &Path, version: &str) -> (bool, String) {
    let out = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .arg(file));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: run scripts/install-test-deps.sh"
    );
    (out.status.success(), said)
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn of_kind<'a>(docs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |o| kind(o) == k)
}

/// The pod template of a workload (CronJob: its job's).
fn pod_template(o: &Value) -> Option<&Value> {
    match kind(o) {
        "Deployment" | "StatefulSet" | "DaemonSet" => Some(&o["spec"]["template"]),
        "CronJob" => Some(&o["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

fn workloads(docs: &[Value]) -> impl Iterator<Item = (&Value, &Value)> {
    docs.iter().filter_map(|o| pod_template(o).map(|t| (o, t)))
}

fn containers(template: &Value) -> &[Value] {
    template["spec"]["containers"]
        .as_sequence()
        .map(|s| s.as_slice())
        .unwrap_or(&[])
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a label selector (a Service's map, or `matchLabels`/`matchExpressions`) selects
/// `labels`. An empty selector selects nothing here: ours must always say what they select.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let (match_labels, exprs) =
        if selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some() {
            (
                string_map(&selector["matchLabels"]),
                selector["matchExpressions"].as_sequence().cloned(),
            )
        } else {
            (string_map(selector), None)
        };
    let exprs = exprs.unwrap_or_default();
    if match_labels.is_empty() && exprs.is_empty() {
        return false;
    }
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_sequence()
                .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "In" => labels
                    .get(key)
                    .is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => !labels
                    .get(key)
                    .is_some_and(|v| values.contains(&v.as_str())),
                "Exists" => labels.contains_key(key),
                "DoesNotExist" => !labels.contains_key(key),
                op => panic!("operator {op}"),
            }
        })
}

fn pod_labels(template: &Value) -> BTreeMap<String, String> {
    string_map(&template["metadata"]["labels"])
}

/// The named container ports of a pod: name → containerPort.
fn named_ports(template: &Value) -> BTreeMap<String, u64> {
    containers(template)
        .iter()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
        .collect()
}

/// The port of a `host:port` / `:port` listen address.
fn addr_port(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The config.yml of ConfigMap `cm_name`, parsed.
fn config_of(docs: &[Value], cm_name: &str) -> Value {
    let cm = of_kind(docs, "ConfigMap")
        .find(|c| name(c) == cm_name)
        .unwrap_or_else(|| panic!("no ConfigMap {cm_name}"));
    serde_yaml_ng::from_str(cm["data"]["config.yml"].as_str().unwrap()).unwrap()
}

/// The ConfigMap a pod mounts its configuration from.
fn config_map_of(template: &Value) -> Option<&str> {
    template["spec"]["volumes"]
        .as_sequence()?
        .iter()
        .find_map(|v| v["configMap"]["name"].as_str())
}

/// The registries with a containerd hosts.toml example under node/containerd/certs.d/.
fn hosts_toml_examples() -> Vec<String> {
    let mut r: Vec<String> = std::fs::read_dir(kube_dir().join("node/containerd/certs.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    r.sort();
    assert!(r.iter().any(|n| n == "docker.io"), "{r:?}");
    r
}

#[test]
fn the_list_of_kustomizations_is_complete() {
    // A new overlay must be added to KUSTOMIZATIONS (so it is rendered and validated), and a
    // new component must be used by an overlay that is.
    let mut found = BTreeSet::new();
    let mut components = BTreeSet::new();
    let mut stack = vec![kube_dir()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let k: Value =
                    serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                let rel = dir
                    .strip_prefix(kube_dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if k["kind"] == "Component" {
                    components.insert(rel);
                } else {
                    found.insert(rel);
                }
            }
        }
    }
    let listed: BTreeSet<String> = KUSTOMIZATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        found, listed,
        "deploy/kubernetes/ kustomizations vs KUSTOMIZATIONS"
    );
    let mut used = BTreeSet::new();
    for k in KUSTOMIZATIONS {
        let text = std::fs::read_to_string(kube_dir().join(k).join("kustomization.yaml")).unwrap();
        let v: Value = serde_yaml_ng::from_str(&text).unwrap();
        for c in v["components"].as_sequence().into_iter().flatten() {
            let path = kube_dir().join(k).join(c.as_str().unwrap());
            let path = path.canonicalize().unwrap();
            used.insert(
                path.strip_prefix(kube_dir().canonicalize().unwrap())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert_eq!(components, used, "components vs those an overlay uses");
}

#[test]
fn every_kustomization_renders_and_passes_the_kubernetes_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in KUSTOMIZATIONS {
        let docs = render(dir);
        let file = tmp.path().join(format!("{}.yaml", dir.replace('/', "-")));
        let text: String = docs
            .iter()
            .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).unwrap()))
            .collect();
        std::fs::write(&file, text).unwrap();
        for version in K8S_VERSIONS {
            let (ok, said) = kubernetes_validate(&file, version);
            assert!(ok, "{dir} against Kubernetes {version}:\n{said}");
            // Every object was checked against a schema, but for the CRDs handled below.
            for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
                assert!(
                    CRD_KINDS
                        .iter()
                        .any(|k| line.contains(&format!("kind {k} "))),
                    "{dir}: {line}"
                );
            }
            let passed = said.lines().filter(|l| l.contains(" passed for ")).count();
            let crds = docs.iter().filter(|d| CRD_KINDS.contains(&kind(d))).count();
            assert_eq!(passed + crds, docs.len(), "{dir} {version}:\n{said}");
        }
    }
}

#[test]
fn the_schema_check_can_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    // An unknown field (strict) and a wrongly typed one.
    for body in [
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  clusterIp: None\n  ports: [{port: 5000}]\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: three\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
    ] {
        std::fs::write(&bad, body).unwrap();
        let (ok, said) = kubernetes_validate(&bad, K8S_VERSIONS[1]);
        assert!(!ok, "passed:\n{body}\n{said}");
    }
}

/// Runs `stevedore config check` on `config` with exactly `env` as REGISTRY_* variables.
fn config_check(config: &Path, env: &[(String, String)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "check"]).arg(config);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run(&mut cmd);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && said.contains("configuration is valid"),
        said,
    )
}

/// The Secret key a `*_FILE` path in a pod reads: (secret name, key), from the pod's volume
/// mounts and volumes.
fn secret_file(template: &Value, container: &Value, path: &str) -> Option<(String, String)> {
    let (dir, key) = path.rsplit_once('/')?;
    let mount = container["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))?;
    let volume = template["spec"]["volumes"]
        .as_sequence()?
        .iter()
        .find(|v| v["name"] == mount["name"])?;
    Some((
        volume["secret"]["secretName"].as_str()?.to_owned(),
        key.to_owned(),
    ))
}

/// The keys of a rendered Secret, or None for one the user creates.
fn secret_keys(docs: &[Value], secret: &str) -> Option<BTreeSet<String>> {
    let s = of_kind(docs, "Secret").find(|s| name(s) == secret);
    match s {
        Some(s) => Some(
            string_map(&s["stringData"])
                .into_keys()
                .chain(string_map(&s["data"]).into_keys())
                .collect(),
        ),
        None => {
            assert!(
                EXTERNAL_SECRETS.contains(&secret),
                "Secret {secret} is neither rendered nor one the README asks to create"
            );
            None
        }
    }
}

#[test]
fn the_configs_in_the_config_maps_pass_config_check_with_the_pods_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_value = tmp.path().join("secret");
    std::fs::write(&secret_value, "placeholder").unwrap();
    let mut checked = 0;
    for dir in KUSTOMIZATIONS {
        let docs = render(dir);
        for cm in of_kind(&docs, "ConfigMap") {
            let cm_name = name(cm);
            let config = tmp.path().join(format!("{cm_name}.yml"));
            std::fs::write(&config, cm["data"]["config.yml"].as_str().unwrap()).unwrap();
            let mut mounted = false;
            for (w, t) in workloads(&docs).filter(|(_, t)| config_map_of(t) == Some(cm_name)) {
                mounted = true;
                for c in containers(t) {
                    let mut env = Vec::new();
                    for e in c["env"].as_sequence().into_iter().flatten() {
                        let var = e["name"].as_str().unwrap().to_owned();
                        if let Some(v) = e["value"].as_str() {
                            if var.ends_with("_FILE") {
                                let (secret, key) = secret_file(t, c, v).unwrap_or_else(|| {
                                    panic!("{dir} {}: {var}={v} is in no mounted Secret", name(w))
                                });
                                if let Some(keys) = secret_keys(&docs, &secret) {
                                    assert!(
                                        keys.contains(&key),
                                        "{dir}: {secret} has no key {key}"
                                    );
                                }
                                env.push((var, secret_value.to_string_lossy().into_owned()));
                            } else {
                                env.push((var, v.to_owned()));
                            }
                        } else {
                            let r = &e["valueFrom"]["secretKeyRef"];
                            let (secret, key) =
                                (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                            if let Some(keys) = secret_keys(&docs, secret) {
                                assert!(keys.contains(key), "{dir}: {secret} has no key {key}");
                            }
                            env.push((var, "placeholder".to_owned()));
                        }
                    }
                    let (ok, said) = config_check(&config, &env);
                    assert!(ok, "{dir}: {} with {env:?}: {said}", name(w));
                    checked += 1;
                }
            }
            assert!(
                mounted,
                "{dir}: ConfigMap {cm_name} is mounted by no workload"
            );
        }
    }
    assert!(checked >= KUSTOMIZATIONS.len(), "{checked} configs checked");
    // A variable that names no key fails the check (so a typo in a manifest's env fails here).
    let minimal = tmp.path().join("minimal.yml");
    std::fs::write(&minimal, "version: 0.1\n").unwrap();
    let (ok, said) = config_check(
        &minimal,
        &[("REGISTRY_PROXY_REMOTEURLL".into(), "http://x".into())],
    );
    assert!(!ok && said.contains("REGISTRY_PROXY_REMOTEURLL"), "{said}");
    // The single tier ships the image's built-in configuration.
    assert_eq!(
        std::fs::read_to_string(kube_dir().join("single/config.yml")).unwrap(),
        std::fs::read_to_string(kube_dir().join("../config.yml")).unwrap(),
        "deploy/kubernetes/single/config.yml differs from deploy/config.yml"
    );
}

#[test]
fn the_objects_fit_together() {
    for dir in KUSTOMIZATIONS {
        let docs = render(dir);
        let secret_names: BTreeSet<&str> = of_kind(&docs, "Secret").map(name).collect();
        let cm_names: BTreeSet<&str> = of_kind(&docs, "ConfigMap").map(name).collect();

        for (w, t) in workloads(&docs) {
            let wn = name(w);
            let labels = pod_labels(t);
            if kind(w) != "CronJob" {
                assert!(
                    selects(&w["spec"]["selector"], &labels),
                    "{dir} {wn}: selector"
                );
            }
            for v in t["spec"]["volumes"].as_sequence().into_iter().flatten() {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(cm_names.contains(cm), "{dir} {wn}: no ConfigMap {cm}");
                }
                if let Some(s) = v["secret"]["secretName"].as_str() {
                    assert!(
                        secret_names.contains(s) || EXTERNAL_SECRETS.contains(&s),
                        "{dir} {wn}: no Secret {s}"
                    );
                }
            }
            assert_eq!(
                t["spec"]["securityContext"]["runAsNonRoot"], true,
                "{dir} {wn}"
            );
            for c in containers(t) {
                assert!(
                    c["resources"]["requests"]["cpu"].is_string(),
                    "{dir} {wn}: cpu"
                );
                assert!(
                    c["resources"]["limits"]["memory"].is_string(),
                    "{dir} {wn}: memory"
                );
            }
            if kind(w) == "CronJob" {
                assert_eq!(
                    w["spec"]["concurrencyPolicy"], "Forbid",
                    "{dir} {wn}: one at a time"
                );
                continue;
            }
            // A server: probes on the debug listener its config names, on the ports it listens.
            let config = config_of(&docs, config_map_of(t).unwrap());
            let ports = named_ports(t);
            assert_eq!(
                ports.get("http"),
                Some(&addr_port(config["http"]["addr"].as_str().unwrap())),
                "{dir} {wn}: the http port is http.addr's"
            );
            assert_eq!(
                ports.get("debug"),
                Some(&addr_port(
                    config["http"]["debug"]["addr"].as_str().unwrap()
                )),
                "{dir} {wn}: the debug port is http.debug.addr's"
            );
            let c = &containers(t)[0];
            for (probe, path) in [
                ("readinessProbe", "/debug/ready"),
                ("livenessProbe", "/debug/health"),
                ("startupProbe", "/debug/health"),
            ] {
                assert_eq!(c[probe]["httpGet"]["path"], path, "{dir} {wn} {probe}");
                assert_eq!(c[probe]["httpGet"]["port"], "debug", "{dir} {wn} {probe}");
            }
            let drain = config["http"]["draintimeout"].as_str().unwrap_or("10s");
            let drain: u64 = drain.trim_end_matches('s').parse().unwrap();
            assert!(
                t["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap() > drain,
                "{dir} {wn}: the grace period must exceed http.draintimeout"
            );
            let annotations = string_map(&t["metadata"]["annotations"]);
            assert_eq!(
                annotations
                    .get("prometheus.io/port")
                    .map(|p| p.parse::<u64>().unwrap()),
                ports.get("debug").copied(),
                "{dir} {wn}: scrape annotation"
            );
        }

        // Each Service selects the pods of exactly one server workload, on ports they have.
        for s in of_kind(&docs, "Service") {
            let matched: Vec<_> = workloads(&docs)
                .filter(|(_, t)| selects(&s["spec"]["selector"], &pod_labels(t)))
                .collect();
            assert_eq!(
                matched.len(),
                1,
                "{dir}: Service {} selects {}",
                name(s),
                matched.len()
            );
            assert_ne!(kind(matched[0].0), "CronJob", "{dir}: Service {}", name(s));
            let ports = named_ports(matched[0].1);
            for p in s["spec"]["ports"].as_sequence().unwrap() {
                let target = p["targetPort"].as_str().unwrap();
                assert!(ports.contains_key(target), "{dir}: {} → {target}", name(s));
            }
        }

        // The PDB covers the regional replicas and nothing else.
        for pdb in of_kind(&docs, "PodDisruptionBudget") {
            let matched: Vec<&str> = workloads(&docs)
                .filter(|(_, t)| selects(&pdb["spec"]["selector"], &pod_labels(t)))
                .map(|(w, _)| name(w))
                .collect();
            assert_eq!(matched, ["stevedore-regional"], "{dir}: PDB {}", name(pdb));
        }

        // The regional tier: ≥ 3 replicas spread over nodes, its peers found through the
        // headless Service.
        if let Some(d) = of_kind(&docs, "Deployment").find(|d| name(d) == "stevedore-regional") {
            assert!(
                d["spec"]["replicas"].as_u64().unwrap() >= 3,
                "{dir}: replicas"
            );
            let t = &d["spec"]["template"];
            let anti = &t["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                [0]["podAffinityTerm"];
            assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "{dir}");
            assert!(
                selects(&anti["labelSelector"], &pod_labels(t)),
                "{dir}: anti-affinity"
            );
            assert!(
                of_kind(&docs, "PodDisruptionBudget").count() == 1,
                "{dir}: PDB"
            );
            let config = config_of(&docs, config_map_of(t).unwrap());
            // On shared storage, one maintenance job runs against the replicas' config (on
            // each replica's own disk there is nothing a separate pod could collect).
            let jobs: Vec<_> = of_kind(&docs, "CronJob").collect();
            if config["storage"]["s3"].is_mapping() {
                assert_eq!(jobs.len(), 1, "{dir}: maintenance job");
                let job = pod_template(jobs[0]).unwrap();
                assert_eq!(
                    config_map_of(job),
                    config_map_of(t),
                    "{dir}: the job's config"
                );
            } else {
                assert!(
                    jobs.is_empty(),
                    "{dir}: a maintenance job without shared storage"
                );
            }
            let peers = &config["proxy"]["peers"];
            if let Some(dns) = peers["dns"].as_str() {
                let svc = of_kind(&docs, "Service")
                    .find(|s| name(s) == dns)
                    .unwrap_or_else(|| panic!("{dir}: proxy.peers.dns {dns} is no Service"));
                assert_eq!(svc["spec"]["clusterIP"], "None", "{dir}: {dns} is headless");
                assert!(
                    selects(&svc["spec"]["selector"], &pod_labels(t)),
                    "{dir}: {dns}"
                );
                let port = peers["port"].as_u64().unwrap_or(5000);
                assert!(
                    svc["spec"]["ports"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"].as_u64() == Some(port) && p["targetPort"] == "http"),
                    "{dir}: {dns} has port {port} on http"
                );
            }
        }

        // The node tier: a hostPort the hosts.toml examples name, and (where the regional
        // tier is in the same render) an upstream that is the regional Service.
        if let Some(ds) = of_kind(&docs, "DaemonSet").next() {
            let t = &ds["spec"]["template"];
            let host_port = containers(t)[0]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "http")
                .and_then(|p| p["hostPort"].as_u64())
                .expect("the node tier's http port has a hostPort");
            for registry in hosts_toml_examples() {
                let hosts = std::fs::read_to_string(
                    kube_dir().join(format!("node/containerd/certs.d/{registry}/hosts.toml")),
                )
                .unwrap();
                assert!(
                    hosts.contains(&format!("[host.\"http://127.0.0.1:{host_port}\"]")),
                    "{registry}/hosts.toml names the hostPort {host_port}"
                );
                assert!(
                    hosts.contains("capabilities = [\"pull\", \"resolve\"]"),
                    "{registry}"
                );
            }
            let config = config_of(&docs, config_map_of(t).unwrap());
            // Each example is for a registry the node tier routes (else it answers 404).
            for registry in hosts_toml_examples() {
                assert!(
                    registry == "docker.io"
                        || config["proxy"]["upstreams"]
                            .as_sequence()
                            .into_iter()
                            .flatten()
                            .any(|u| u["name"] == registry.as_str()),
                    "{dir}: hosts.toml for {registry}, which the node tier does not route"
                );
            }
            let upstream = config["proxy"]["remoteurl"].as_str().unwrap();
            let mut all_upstreams = vec![upstream.to_owned()];
            for u in config["proxy"]["upstreams"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                all_upstreams.push(u["remoteurl"].as_str().unwrap().to_owned());
            }
            if let Some(svc) = of_kind(&docs, "Service").find(|s| name(s) == "stevedore-regional") {
                let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap();
                for u in &all_upstreams {
                    assert_eq!(u, &format!("http://stevedore-regional:{port}"), "{dir}");
                }
                // Every registry the regional tier serves by ?ns= is passed on by the node.
                let regional = config_of(
                    &docs,
                    config_map_of(
                        pod_template(
                            of_kind(&docs, "Deployment")
                                .find(|d| name(d) == "stevedore-regional")
                                .unwrap(),
                        )
                        .unwrap(),
                    )
                    .unwrap(),
                );
                let names = |c: &Value| -> BTreeSet<String> {
                    c["proxy"]["upstreams"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .map(|u| u["name"].as_str().unwrap().to_owned())
                        .collect()
                };
                let (node_names, regional_names) = (names(&config), names(&regional));
                assert!(
                    node_names.is_subset(&regional_names),
                    "{dir}: the node tier names {node_names:?}, the regional {regional_names:?}"
                );
            }
        }

        // The PodMonitor (no schema to validate against): it scrapes the debug port of every
        // server workload.
        for pm in of_kind(&docs, "PodMonitor") {
            assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1", "{dir}");
            let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
            assert_eq!(endpoint["port"], "debug", "{dir}");
            assert_eq!(endpoint["path"], "/metrics", "{dir}");
            for (w, t) in workloads(&docs).filter(|(w, _)| kind(w) != "CronJob") {
                assert!(
                    selects(&pm["spec"]["selector"], &pod_labels(t)),
                    "{dir}: the PodMonitor misses {}",
                    name(w)
                );
            }
        }
    }
}

/// `dir`'s ConfigMap `cm_name` config.yml, written to `path`.
fn write_rendered_config(dir: &str, cm_name: &str, path: &Path) -> Value {
    let docs = render(dir);
    let cm = of_kind(&docs, "ConfigMap")
        .find(|c| name(c).starts_with(cm_name))
        .unwrap_or_else(|| panic!("{dir}: no ConfigMap {cm_name}"));
    let text = cm["data"]["config.yml"].as_str().unwrap();
    std::fs::write(path, text).unwrap();
    serde_yaml_ng::from_str(text).unwrap()
}

/// The node tier as rendered: its config.yml (listen addresses, data directory and upstream
/// URLs moved to this machine by `REGISTRY_*` variables, nothing else changed) serves a real
/// containerd configured by the example hosts.toml files (their mirror address and fallback
/// replaced), through a stand-in for the regional tier; then it serves what it cached with
/// the regional tier gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_tier_as_rendered_serves_containerd_with_the_example_hosts_toml() {
    use crate::common::containerd::{Containerd, require_daemon};
    use crate::common::tools::free_port;
    use crate::common::{Server, client};
    use crate::e2e_containerd::TwoRegistries;

    require_daemon("the_node_tier_as_rendered_serves_containerd_with_the_example_hosts_toml");
    let tmp = tempfile::tempdir().unwrap();
    // The regional tier's routing (deploy/kubernetes/regional/config.yml names ghcr.io).
    let mut two = TwoRegistries::start(tmp.path()).await;
    let config_path = tmp.path().join("node.yml");
    let config = write_rendered_config("node", "stevedore-node", &config_path);
    let data = tmp.path().join("node-data");
    let mut env: Vec<(String, String)> = vec![
        ("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("REGISTRY_HTTP_DEBUG_ADDR".into(), "127.0.0.1:0".into()),
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(),
            data.display().to_string(),
        ),
        ("REGISTRY_PROXY_REMOTEURL".into(), two.mirror.url("")),
    ];
    let upstreams = config["proxy"]["upstreams"]
        .as_sequence()
        .map_or(0, |u| u.len());
    for i in 0..upstreams {
        env.push((
            format!("REGISTRY_PROXY_UPSTREAMS_{i}_REMOTEURL"),
            two.mirror.url(""),
        ));
    }
    let node = Server::spawn(&config_path, &env, data);
    // The DaemonSet's probes ask paths the debug listener answers.
    let docs = render("node");
    let ds = of_kind(&docs, "DaemonSet").next().unwrap();
    let c = &containers(&ds["spec"]["template"])[0];
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        let r = client().get(node.debug_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe} {path}");
    }

    let ctd = Containerd::start();
    let hosts = tmp.path().join("certs.d");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let registries = hosts_toml_examples();
    for registry in &registries {
        let example = std::fs::read_to_string(
            kube_dir().join(format!("node/containerd/certs.d/{registry}/hosts.toml")),
        )
        .unwrap();
        let server = example
            .lines()
            .find(|l| l.starts_with("server = "))
            .expect("server line");
        let ours = example
            .replace("http://127.0.0.1:30500", &node.url(""))
            .replace(server, &format!("server = {nowhere:?}"));
        assert_ne!(ours, example, "{registry}: nothing replaced");
        std::fs::create_dir_all(hosts.join(registry)).unwrap();
        std::fs::write(hosts.join(registry).join("hosts.toml"), ours).unwrap();
    }
    ctd.fetch_ok(&hosts, "docker.io/library/app:v1");
    if registries.iter().any(|r| r == "ghcr.io") {
        ctd.fetch_ok(&hosts, "ghcr.io/owner/tool:2.0");
        // Each registry's image came from its own upstream, through the regional stand-in.
        two.assert_each_from_its_upstream(&ctd);
    }
    for d in two.hub_image.digests().into_iter().skip(1) {
        assert!(
            node.fetched_and_cached(d).await,
            "the node tier did not cache {d}"
        );
    }

    // The regional tier goes away: the node tier still serves what it has, to a containerd
    // that has nothing.
    two.mirror.stop();
    drop(ctd);
    let ctd = Containerd::start();
    ctd.fetch_ok(&hosts, "docker.io/library/app:v1");
    let r = client()
        .get(node.url(&format!(
            "/v2/library/app/blobs/{}",
            two.hub_image.layers[0].desc.digest
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
