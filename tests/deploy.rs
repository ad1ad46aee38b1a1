//! The deployment examples under deploy/ are parsed and checked here, since no Docker engine or
//! cluster runs in CI: every YAML file loads, the key facts hold, the embedded configs validate.
mod support;
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

// ---- Dockerfile, .dockerignore, systemd unit: checked against README and the config ----

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The README line of an sh block that starts with `prefix` (continuations not needed here).
fn readme_line(prefix: &str) -> String {
    readme()
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("README has no line starting with {prefix:?}"))
        .to_string()
}

/// A Dockerfile instruction: keyword (upper case) and its arguments, continuations joined.
#[derive(Debug)]
struct Instr {
    op: String,
    args: String,
}

fn dockerfile() -> Vec<Instr> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, args) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push(Instr {
            op: op.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        cur.clear();
    }
    out
}

/// The stages: each FROM and the instructions after it.
fn stages(all: &[Instr]) -> Vec<(&Instr, Vec<&Instr>)> {
    let mut out: Vec<(&Instr, Vec<&Instr>)> = Vec::new();
    for i in all {
        if i.op == "FROM" {
            out.push((i, vec![]));
        } else if let Some(last) = out.last_mut() {
            last.1.push(i);
        }
    }
    out
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form array: {args}: {e}"))
}

/// ENV as KEY=VALUE pairs.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The image's config: the shipped config.toml with the image's ENV.
fn image_config(runtime: &[&Instr]) -> switchyard::config::Config {
    let env: Vec<(String, String)> = runtime
        .iter()
        .filter(|i| i.op == "ENV")
        .flat_map(|i| env_pairs(&i.args))
        .collect();
    let src = std::fs::read_to_string(repo().join("config.toml")).unwrap();
    parse_config(&src, env)
}

fn healthcheck_argv(runtime: &[&Instr]) -> (String, Vec<String>) {
    let hc = runtime
        .iter()
        .find(|i| i.op == "HEALTHCHECK")
        .expect("HEALTHCHECK");
    let (opts, cmd) = hc.args.split_once("CMD ").expect("HEALTHCHECK ... CMD");
    (opts.to_string(), exec_form(cmd))
}

#[test]
fn dockerfile_builds_and_runs_as_the_readme_says() {
    let all = dockerfile();
    let st = stages(&all);
    assert_eq!(st.len(), 2, "multi-stage: build, then runtime");
    let (from, build) = &st[0];
    assert_eq!(from.args, "rust:1-bookworm AS build");
    let (from, runtime) = &st[1];
    assert_eq!(from.args, "debian:bookworm-slim");

    // The build runs README's build command, and the runtime takes README's binary path.
    let readme_build = readme_line("cargo build ");
    let (readme_cmd, readme_comment) = readme_build.split_once(" # ").unwrap();
    let run: Vec<&str> = build
        .iter()
        .filter(|i| i.op == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(
        run,
        vec![readme_cmd.trim()],
        "the build stage runs README's command"
    );
    let readme_bin = readme_comment
        .split_whitespace()
        .find(|w| w.starts_with("target/"))
        .expect("README names the binary's path");
    let workdir = build.iter().find(|i| i.op == "WORKDIR").unwrap();
    let copy = runtime
        .iter()
        .find(|i| i.op == "COPY" && i.args.starts_with("--from=build "))
        .expect("COPY --from=build");
    assert_eq!(
        copy.args,
        format!(
            "--from=build {}/{readme_bin} /usr/local/bin/switchyard",
            workdir.args
        )
    );
    // The build needs no system package (no protoc): the build stage installs nothing.
    assert!(!build.iter().any(|i| i.args.contains("apt-get")));
    // The runtime: ca-certificates, no curl (the health check needs none).
    let rt_run: String = runtime
        .iter()
        .filter(|i| i.op == "RUN")
        .map(|i| i.args.clone())
        .collect();
    assert!(rt_run.contains("--no-install-recommends ca-certificates"));
    assert!(!rt_run.contains("curl"));

    // A non-root user, created with the uid it runs as.
    let user = &runtime.iter().rfind(|i| i.op == "USER").expect("USER").args;
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: {user}");
    assert!(
        rt_run.contains(&format!("useradd --system --uid {uid} ")),
        "user {uid} is not created: {rt_run}"
    );
    let state = &runtime.iter().rfind(|i| i.op == "WORKDIR").unwrap().args;
    assert!(
        rt_run.contains(&format!("-o {uid} -g")) && rt_run.contains(state.as_str()),
        "the working directory (file store) belongs to the user"
    );

    // Entrypoint + command are `switchyard -c <the config the image ships>`.
    let ep = exec_form(&runtime.iter().find(|i| i.op == "ENTRYPOINT").unwrap().args);
    let cmd = exec_form(&runtime.iter().find(|i| i.op == "CMD").unwrap().args);
    assert_eq!(ep, vec!["/usr/local/bin/switchyard"]);
    let parsed = switchyard::cli::parse(ep.iter().chain(&cmd)).expect("a valid command line");
    let switchyard::cli::Command::Run { config } = parsed else {
        panic!("the image does not run the server: {cmd:?}");
    };
    assert!(runtime
        .iter()
        .any(|i| i.op == "COPY" && i.args == format!("config.toml {}", config.display())));

    // EXPOSE is the listeners of that config; both listen on all addresses.
    let cfg = image_config(runtime);
    let mut exposed: Vec<u16> = runtime
        .iter()
        .filter(|i| i.op == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace().map(|p| p.parse().unwrap()))
        .collect();
    exposed.sort_unstable();
    let mut ports = vec![cfg.server.listen.port, cfg.admin_listen.port];
    ports.sort_unstable();
    assert_eq!(exposed, ports);
    assert_eq!(cfg.server.listen.host, "0.0.0.0");
    assert_eq!(cfg.admin_listen.host, "0.0.0.0");

    // HEALTHCHECK: /ready on the admin port, timeout below the interval.
    let (opts, argv) = healthcheck_argv(runtime);
    assert!(argv.join(" ").contains("GET /ready "), "{argv:?}");
    let opt = |name: &str| -> f64 {
        let v = opts
            .split_whitespace()
            .find_map(|o| o.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("--{name}"));
        v.trim_end_matches('s').parse().unwrap()
    };
    assert!(opt("timeout") < opt("interval"));
    let env: Vec<(String, String)> = runtime
        .iter()
        .filter(|i| i.op == "ENV")
        .flat_map(|i| env_pairs(&i.args))
        .collect();
    let probe_port = env
        .iter()
        .find(|(k, _)| k == "SWITCHYARD_ADMIN_PORT")
        .map(|(_, v)| v.parse::<u16>().unwrap())
        .expect("SWITCHYARD_ADMIN_PORT");
    assert_eq!(probe_port, cfg.admin_listen.port);
    // docker-compose.yml mounts its own config over the image's: same admin port, or the
    // compose file would have to set SWITCHYARD_ADMIN_PORT.
    let compose = std::fs::read_to_string(deploy_dir().join("compose/config.toml")).unwrap();
    let compose = parse_config(&compose, vec![]);
    let compose_env = std::fs::read_to_string(deploy_dir().join("docker-compose.yml")).unwrap();
    assert!(
        compose.admin_listen.port == probe_port || compose_env.contains("SWITCHYARD_ADMIN_PORT"),
        "the compose config moves the admin port away from the health check"
    );

    // README's docker commands: this file, and the ports it publishes are the exposed ones,
    // the admin port on loopback only.
    let build_cmd = readme_line("docker build ");
    assert!(build_cmd.contains("-f deploy/Dockerfile") && build_cmd.ends_with(" ."));
    let run_cmd = readme_line("docker run ");
    let published: Vec<&str> = run_cmd
        .split(" -p ")
        .skip(1)
        .map(|p| p.split_whitespace().next().unwrap())
        .collect();
    assert!(published.contains(&format!("{0}:{0}", cfg.server.listen.port).as_str()));
    assert!(published.contains(&format!("127.0.0.1:{0}:{0}", cfg.admin_listen.port).as_str()));
}

/// Runs the image's HEALTHCHECK command here (bash is on both) with the admin port it probes.
fn run_healthcheck(port: u16) -> Option<i32> {
    let all = dockerfile();
    let st = stages(&all);
    let (_, argv) = healthcheck_argv(&st[1].1);
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("SWITCHYARD_ADMIN_PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bash");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the health check hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_healthcheck_command_passes_only_when_ready() {
    // Ready: a file store loads at start.
    let ready = support::Switchyard::start(&support::listen_section(""));
    assert_eq!(run_healthcheck(ready.admin.port()), Some(0));
    // Not ready: an etcd store that never answers keeps /ready at 503.
    let dead = support::dead_port();
    let waiting = support::Switchyard::start(&format!(
        "{}[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:{dead}\"]\n",
        support::listen_section("")
    ));
    let r = support::client()
        .get(waiting.admin_url("/ready"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_ne!(run_healthcheck(waiting.admin.port()), Some(0));
    // Nothing listening.
    assert_ne!(run_healthcheck(support::dead_port()), Some(0));
}

/// `.dockerignore` patterns (the subset used there: `**/` prefixes and `*` within a segment;
/// anything else is refused so that this matcher is never silently wrong).
fn dockerignore() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let pats: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect();
    for p in &pats {
        assert!(
            !p.starts_with('!') && !p.contains('?') && !p.contains('['),
            "pattern {p:?}: extend this test's matcher first"
        );
    }
    pats
}

fn seg_match(pat: &str, name: &str) -> bool {
    match pat.split_once('*') {
        None => pat == name,
        Some((pre, post)) => {
            assert!(!post.contains('*'), "two wildcards in one segment: {pat}");
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
    }
}

/// Whether `rel` (a path inside the context) is excluded: a pattern matches it or a parent.
fn ignored(pats: &[String], rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    pats.iter().any(|p| {
        let (any_depth, p) = match p.strip_prefix("**/") {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let pp: Vec<&str> = p.split('/').collect();
        let starts: Vec<usize> = if any_depth {
            (0..parts.len()).collect()
        } else {
            vec![0]
        };
        starts.into_iter().any(|s| {
            parts.len() >= s + pp.len() && pp.iter().zip(&parts[s..]).all(|(a, b)| seg_match(a, b))
        })
    })
}

#[test]
fn dockerignore_keeps_build_output_and_git_out() {
    let pats = dockerignore();
    for out in [
        "target",
        "target/release/switchyard",
        ".git",
        ".git/HEAD",
        "fuzz/target/x",
        "fuzz/corpus/a",
        "switchyard-state.json",
    ] {
        assert!(ignored(&pats, out), "{out} is sent as build context");
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "config.toml",
        "benches/hot_path.rs",
    ] {
        assert!(
            !ignored(&pats, needed),
            "{needed} is left out of the context"
        );
    }
}

fn copy_context(pats: &[String], dir: &Path, rel: &str, to: &Path, n: &mut usize) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if ignored(pats, &r) {
            continue;
        }
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            std::fs::create_dir_all(to.join(&r)).unwrap();
            copy_context(pats, &e.path(), &r, to, n);
        } else if ft.is_file() {
            std::fs::copy(e.path(), to.join(&r)).unwrap();
            *n += 1;
            assert!(*n < 5000, "the build context has over 5,000 files");
        }
    }
}

/// The build context as Docker would send it (the checkout less .dockerignore) is complete
/// for README's `--locked` commands: every target the manifest names is there and Cargo.lock
/// is current (`cargo fetch --locked` reads the same manifest and lock the build does,
/// without compiling; --offline, as the suite's own build already fetched everything).
#[test]
fn the_build_context_has_what_the_locked_build_needs() {
    let pats = dockerignore();
    let ctx = support::TempDir::new("docker-context");
    let mut n = 0;
    copy_context(&pats, &repo(), "", &ctx.0, &mut n);
    assert!(!ctx.0.join("target").exists() && !ctx.0.join(".git").exists());
    // Only the host's packages: the suite's build downloaded those, not Windows-only ones.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc");
    let host = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "fetch",
            "--locked",
            "--offline",
            "--quiet",
            "--target",
            &host,
        ])
        .current_dir(&ctx.0)
        .env("CARGO_TARGET_DIR", ctx.0.join("target"))
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "the Docker context cannot build with --locked:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // README's two build commands both use --locked.
    assert!(readme_line("cargo build ").starts_with("cargo build --release --locked "));
    assert!(readme_line("cargo install ").starts_with("cargo install --path . --locked "));
}

/// A systemd unit: section -> key -> every value (keys may repeat).
fn unit(text: &str) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
    let mut out = std::collections::BTreeMap::<String, Vec<(String, String)>>::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

/// systemd's time span: `45`, `45s`, `1min 30s`, `2min`.
fn timespan(v: &str) -> f64 {
    v.split_whitespace()
        .map(|p| {
            let i = p
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(p.len());
            let n: f64 = p[..i].parse().unwrap();
            n * match &p[i..] {
                "" | "s" | "sec" => 1.0,
                "min" | "m" => 60.0,
                "ms" => 0.001,
                other => panic!("unit {other}"),
            }
        })
        .sum()
}

#[test]
fn systemd_unit_reloads_drains_and_matches_the_install_steps() {
    let path = deploy_dir().join("switchyard.service");
    let text = std::fs::read_to_string(&path).expect("deploy/switchyard.service");
    let u = unit(&text);
    let svc = &u["Service"];
    let all = |k: &str| -> Vec<&str> {
        svc.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |k: &str| -> &str {
        let v = all(k);
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        v[0]
    };
    assert!(["simple", "notify"].contains(&one("Type")));
    assert!(all("ExecReload").contains(&"/bin/kill -HUP $MAINPID"));
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("NoNewPrivileges"), "yes");
    // The drain must end before systemd's stop timeout sends SIGKILL.
    let shipped = parse_config(
        &std::fs::read_to_string(repo().join("config.toml")).unwrap(),
        vec![],
    );
    let stop = timespan(one("TimeoutStopSec"));
    assert!(
        stop > shipped.server.drain_timeout.as_secs_f64(),
        "TimeoutStopSec {stop} <= drain_timeout"
    );
    // A descriptor per client and one per backend connection, for max_connections of each.
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(
        nofile > 2 * shipped.server.max_connections as u64,
        "{nofile}"
    );
    assert_eq!(
        u["Install"][0],
        ("WantedBy".into(), "multi-user.target".into())
    );

    // The commands it runs are valid command lines: the server and checks of one file.
    let argv = |v: &str| -> Vec<String> { v.split_whitespace().map(String::from).collect() };
    let start = argv(one("ExecStart"));
    let bin = start[0].clone();
    let switchyard::cli::Command::Run { config } = switchyard::cli::parse(&start).unwrap() else {
        panic!("ExecStart does not run the server");
    };
    for check in all("ExecStartPre").into_iter().chain(
        all("ExecReload")
            .into_iter()
            .filter(|v| v.starts_with(&bin)),
    ) {
        assert_eq!(
            switchyard::cli::parse(argv(check)).unwrap(),
            switchyard::cli::Command::Check {
                config: config.clone()
            }
        );
    }
    // README's install steps put the binary, the config and the unit where the unit says.
    assert_eq!(
        readme_line("sudo install -m 0755 target/release/switchyard "),
        format!("sudo install -m 0755 target/release/switchyard {bin}")
    );
    assert_eq!(
        readme_line("sudo install -D -m 0644 config.toml "),
        format!("sudo install -D -m 0644 config.toml {}", config.display())
    );
    assert!(
        readme_line("sudo install -m 0644 deploy/switchyard.service ")
            .ends_with(" /etc/systemd/system/switchyard.service")
    );
    let state = one("StateDirectory");
    assert_eq!(one("WorkingDirectory"), format!("/var/lib/{state}"));

    // systemd's own parser: no unknown key, no bad value (binary paths pointed at this build).
    let dir = support::TempDir::new("unit");
    let copy = dir.0.join("switchyard.service");
    std::fs::write(&copy, text.replace(&bin, env!("CARGO_BIN_EXE_switchyard"))).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("switchyard.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
