//! The deployment examples under deploy/ are parsed and checked here, since no Docker engine or
//! cluster runs in CI: every YAML file loads, the key facts hold, the embedded configs validate.
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read deploy/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn yaml_files() -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    all.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"));
    all.sort();
    all
}

fn load(p: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(p).expect("read yaml");
    match YamlLoader::load_from_str(&text) {
        Ok(d) => d,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// Every Kubernetes object under deploy/kubernetes.
fn objects() -> Vec<Yaml> {
    yaml_files()
        .iter()
        .filter(|p| p.starts_with(deploy_dir().join("kubernetes")))
        .flat_map(|p| load(p))
        .collect()
}

fn find<'a>(objs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objs.iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn env_of(container: &Yaml) -> Vec<(String, String)> {
    container["env"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_config(src: &str, env: Vec<(String, String)>) -> switchyard::config::Config {
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match switchyard::config::parse(src, "config.toml", Box::new(lookup)) {
        Ok(c) => c,
        Err(e) => panic!("embedded config is invalid:\n{e}"),
    }
}

#[test]
fn every_yaml_file_parses_and_kubernetes_objects_are_well_formed() {
    let files = yaml_files();
    assert!(files.len() >= 3, "{files:?}");
    for p in &files {
        let docs = load(p);
        assert!(!docs.is_empty(), "{} is empty", p.display());
        if p.starts_with(deploy_dir().join("kubernetes")) {
            for d in &docs {
                assert!(
                    d["apiVersion"].as_str().is_some(),
                    "{}: apiVersion",
                    p.display()
                );
                assert!(d["kind"].as_str().is_some(), "{}: kind", p.display());
                assert!(
                    d["metadata"]["name"].as_str().is_some(),
                    "{}: metadata.name",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn switchyard_deployment_probes_ready_on_the_admin_port_and_scales_2_to_10() {
    let objs = objects();
    let dep = find(&objs, "Deployment", "switchyard");
    let pod = &dep["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"].as_str(), Some("/ready"));
    // The probe's port, by name or number, is the admin port of the embedded config.
    let admin_port = match &probe["port"] {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => c["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("probe port {other:?}"),
    };
    let cm = find(&objs, "ConfigMap", "switchyard-config");
    let cfg = parse_config(cm["data"]["config.toml"].as_str().unwrap(), env_of(c));
    assert_eq!(i64::from(cfg.admin_listen.port), admin_port);
    // The kubelet reaches the pod IP: the admin listener must not be loopback only.
    assert_eq!(cfg.admin_listen.host, "0.0.0.0");
    // So every pod of the allowed network reaches the registration API: a key is needed too.
    let perm = cfg
        .gateway
        .registration_permission
        .as_deref()
        .expect("registration_permission set");
    assert_eq!(perm, "registry:write");
    assert!(cfg
        .api_keys
        .iter()
        .any(|k| k.permissions.iter().any(|p| p == perm)));
    // Kubernetes must not SIGKILL in the middle of the drain.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        (grace - pre_stop) as f64 > cfg.server.drain_timeout.as_secs_f64(),
        "grace {grace}s - preStop {pre_stop}s <= drain_timeout"
    );
    // The ConfigMap is mounted as a directory (a subPath mount never sees updates).
    let mounts = c["volumeMounts"].as_vec().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"].as_str() == Some("/etc/switchyard") && m["subPath"].is_badvalue()));

    let hpa = find(&objs, "HorizontalPodAutoscaler", "switchyard");
    assert_eq!(hpa["spec"]["minReplicas"].as_i64(), Some(2));
    assert_eq!(hpa["spec"]["maxReplicas"].as_i64(), Some(10));
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("switchyard")
    );

    let svc = find(&objs, "Service", "switchyard");
    assert_eq!(
        svc["spec"]["selector"]["app"],
        pod["metadata"]["labels"]["app"]
    );
}

#[test]
fn gateway_statefulset_is_addressed_through_the_headless_service() {
    let objs = objects();
    let svc = find(&objs, "Service", "gateway-internal");
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
    let sts = find(&objs, "StatefulSet", "gateway");
    assert_eq!(
        sts["spec"]["serviceName"].as_str(),
        Some("gateway-internal")
    );
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(svc["spec"]["selector"]["app"], labels["app"]);
    assert_eq!(sts["spec"]["selector"]["matchLabels"]["app"], labels["app"]);
    let replicas = sts["spec"]["replicas"].as_i64().unwrap();

    // The shard rule names one pod per replica, by its stable DNS name, on the pods' port.
    let cm = find(&objs, "ConfigMap", "switchyard-config");
    let dep = find(&objs, "Deployment", "switchyard");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let cfg = parse_config(cm["data"]["config.toml"].as_str().unwrap(), env_of(c));
    let shard = cfg
        .shards
        .iter()
        .find(|s| s.name == "gateway")
        .expect("gateway shard");
    assert_eq!(shard.addresses.len() as i64, replicas);
    let port = svc["spec"]["ports"][0]["port"].as_i64().unwrap();
    for (n, a) in shard.addresses.iter().enumerate() {
        assert_eq!(a.host, format!("gateway-{n}.gateway-internal"));
        assert_eq!(i64::from(a.port), port);
    }
    // Without the Deployment's variable the default gives the same count.
    let cfg = parse_config(cm["data"]["config.toml"].as_str().unwrap(), vec![]);
    assert_eq!(cfg.shards[0].addresses.len() as i64, replicas);
}

#[test]
fn compose_file_runs_switchyard_in_front_of_two_services_with_a_valid_config() {
    let path = deploy_dir().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("docker kill -s HUP"),
        "the reload command is documented"
    );
    let doc = &load(&path)[0];
    let services = doc["services"].as_hash().expect("services");
    assert!(services.len() >= 3, "switchyard and two services");
    let sy = &doc["services"]["switchyard"];
    let mount = sy["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .find(|v| v.contains("/etc/switchyard"))
        .expect("config mount");
    let host_dir = deploy_dir().join(mount.split(':').next().unwrap());
    let src = std::fs::read_to_string(host_dir.join("config.toml")).expect("mounted config");
    let cfg = parse_config(&src, vec![]);
    // Each target is a compose service; the published ports are the listeners.
    for t in &cfg.targets {
        assert!(
            !doc["services"][t.address.host.as_str()].is_badvalue(),
            "target {} is not a compose service",
            t.address
        );
    }
    let ports: Vec<&str> = sy["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(ports
        .iter()
        .any(|p| p.ends_with(&format!(":{}", cfg.server.listen.port))));
    assert!(ports.iter().any(
        |p| p.starts_with("127.0.0.1:") && p.ends_with(&format!(":{}", cfg.admin_listen.port))
    ));
    // Docker must not SIGKILL in the middle of the drain.
    let grace: f64 = sy["stop_grace_period"]
        .as_str()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(grace > cfg.server.drain_timeout.as_secs_f64());
}
