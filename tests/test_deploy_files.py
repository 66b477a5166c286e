"""The deployment files, checked without Docker or Kubernetes: they parse, and what they declare holds.

Kubernetes pods are locked down, the NetworkPolicies admit exactly the pods they should (evaluated against the labels
the other manifests give those pods), Dask speaks TLS everywhere, the pseudonym key reaches the workers as a secret,
images carry the package version, secrets stay out of the image and out of git, and the image is installed by the
same script as `make`.
"""

from __future__ import annotations

import ast
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KEY_FILE_ENV = "COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE"
TLS_CLIENT_ENV = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
)
PACKAGE_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_docs() -> list[dict]:
    return [d for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _yaml_docs(path)]


def _pod_specs(node) -> list[dict]:
    """Every PodSpec (a mapping with ``containers``) anywhere in a manifest: Jobs, Deployments, DaskClusters."""
    if isinstance(node, dict):
        found = [node] if isinstance(node.get("containers"), list) else []
        return found + [s for value in node.values() for s in _pod_specs(value)]
    if isinstance(node, list):
        return [s for item in node for s in _pod_specs(item)]
    return []


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _argv(value) -> list[str]:
    """A compose command or entrypoint (string or list) as the argument list the container gets."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_deploy_yaml_file_parses_into_documents():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert {"compose.yaml", "daskcluster.yaml", "networkpolicy.yaml", "flow-runner.yaml"} <= {f.name for f in files}
    for path in files:
        docs = _yaml_docs(path)
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_every_kubernetes_pod_runs_unprivileged_as_non_root_with_a_read_only_root():
    specs = [s for doc in _k8s_docs() for s in _pod_specs(doc)]
    assert len(specs) >= 3  # Dask scheduler, Dask workers, flow runner
    for spec in specs:
        pod = spec.get("securityContext", {})
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert spec.get("automountServiceAccountToken") is False  # no pod talks to the Kubernetes API
        assert all("hostPath" not in v for v in spec.get("volumes", []))
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = {**pod, **container.get("securityContext", {})}  # the container's own settings win
            name = container["name"]
            assert ctx.get("runAsNonRoot") is True, name
            assert ctx.get("runAsUser", 1000) != 0, name
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert not ctx.get("privileged", False), name
            assert ctx.get("readOnlyRootFilesystem") is True, name
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), name
            assert not ctx.get("capabilities", {}).get("add"), name
            # what a read-only root leaves writable: /tmp (HOME in the image), from a volume of the pod
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}, name


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _admits(policies: list[dict], target: dict, source: dict, port: int, source_namespace: str = "") -> bool:
    """Whether NetworkPolicies let a pod with labels ``source`` (same namespace unless ``source_namespace`` is given)
    open a TCP connection to ``port`` of a pod with labels ``target`` (Kubernetes semantics: allowed when no policy
    selects the target for ingress, else when any rule of any selecting policy allows it)."""
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], target) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "namespaceSelector" in peer and "podSelector" not in peer:
                    if source_namespace and _selects(
                        peer["namespaceSelector"], {"kubernetes.io/metadata.name": source_namespace}
                    ):
                        return True
                elif "podSelector" in peer and "namespaceSelector" not in peer:
                    if not source_namespace and _selects(peer["podSelector"], source):
                        return True
    return False


def test_network_policies_let_only_workers_and_the_flow_runner_reach_the_scheduler_and_only_dask_the_workers():
    docs = _k8s_docs()
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    # the labels the dask-kubernetes operator gives the cluster's pods, and the flow runner's own
    dask = {"dask.org/cluster-name": cluster["metadata"]["name"]}
    scheduler, worker = {**dask, "dask.org/component": "scheduler"}, {**dask, "dask.org/component": "worker"}
    runner = job["spec"]["template"]["metadata"]["labels"]
    stranger = {"app": "something-else"}
    other_cluster_worker = {"dask.org/cluster-name": "another", "dask.org/component": "worker"}
    comm, dashboard = 8786, 8787
    ports = {
        p["containerPort"]
        for s in _pod_specs(cluster["spec"]["scheduler"])
        for c in s["containers"]
        for p in c.get("ports", [])
    }
    assert {comm, dashboard} <= ports

    assert _admits(policies, scheduler, worker, comm) and _admits(policies, scheduler, runner, comm)
    assert _admits(policies, scheduler, runner, dashboard)
    assert _admits(policies, scheduler, {}, dashboard, source_namespace="dask-operator")
    for source in (stranger, other_cluster_worker):
        assert not _admits(policies, scheduler, source, comm) and not _admits(policies, scheduler, source, dashboard)
    assert not _admits(policies, scheduler, worker, dashboard)
    assert not _admits(policies, scheduler, {}, comm, source_namespace="dask-operator")

    for port in (comm, 40000):  # workers listen on ports of their choosing
        assert _admits(policies, worker, scheduler, port) and _admits(policies, worker, worker, port)
        for source in (runner, stranger, other_cluster_worker):
            assert not _admits(policies, worker, source, port)
        assert not _admits(policies, worker, {}, port, source_namespace="dask-operator")


def _images() -> list[tuple[str, str]]:
    """(where, image) of every container image the deploy files run."""
    found = [
        (f"k8s {c['name']}", c["image"])
        for doc in _k8s_docs()
        for s in _pod_specs(doc)
        for c in s["containers"] + s.get("initContainers", [])
    ]
    found += [(f"compose {name}", svc["image"]) for name, svc in _compose()["services"].items() if "image" in svc]
    found += [
        ("Dockerfile FROM", line.split()[1])
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    ]
    return found


def test_images_are_pinned_and_ours_carry_the_package_version():
    images = _images()
    ours = [(where, image) for where, image in images if image.split(":")[0] == "cohort-dosimetry"]
    assert len(ours) >= 5  # k8s scheduler, worker, flow runner; compose services built from deploy/Dockerfile
    for where, image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), f"{where}: {image} has no pinned tag"
    for where, image in ours:
        assert image == f"cohort-dosimetry:{PACKAGE_VERSION}", where


def test_compose_speaks_tls_only_and_gives_each_service_only_its_own_secrets():
    compose = _compose()
    services, secrets = compose["services"], compose["secrets"]
    for name, secret in secrets.items():
        # host files next to compose.yaml, under .secrets/ (ignored by git and docker), unless the user names another
        assert set(secret) == {"file"} and (".secrets/" in secret["file"] or secret["file"].startswith("${")), name

    def secret_path(svc: dict, path: str) -> str:
        """The secret a service reads at ``path``; it must list it."""
        assert path.startswith("/run/secrets/"), path
        secret = path.removeprefix("/run/secrets/")
        assert secret in svc.get("secrets", []) and secret in secrets, path
        return secrets[secret]["file"]

    dask_services = {n: s for n, s in services.items() if _argv(s.get("command"))[:1] == ["dask"]}
    schedulers = {n: s for n, s in dask_services.items() if _argv(s["command"])[1] == "scheduler"}
    workers = {n: s for n, s in dask_services.items() if _argv(s["command"])[1] == "worker"}
    assert len(schedulers) == 1 and len(workers) >= 2
    ((scheduler_name, scheduler),) = schedulers.items()
    argv = _argv(scheduler["command"])
    assert _option(argv, "--protocol") == "tls"
    assert secret_path(scheduler, _option(argv, "--tls-cert")).endswith("scheduler.pem")
    assert secret_path(scheduler, _option(argv, "--tls-key")).endswith("scheduler.key")
    ca = secret_path(scheduler, _option(argv, "--tls-ca-file"))
    assert ca.endswith("ca.pem")
    assert not scheduler.get("volumes"), "the scheduler mounts no patient data"
    assert KEY_FILE_ENV not in scheduler.get("environment", {}) and "pseudonym-key" not in scheduler["secrets"]
    assert not any("key" in s and not s.startswith("dask-scheduler") for s in scheduler["secrets"])
    for port in scheduler.get("ports", []):
        if port.endswith(":8787"):
            assert port.startswith("127.0.0.1:"), "the unauthenticated dashboard is published on loopback only"

    key_files = set()
    for name, worker in workers.items():
        argv = _argv(worker["command"])
        assert argv[2] == f"tls://{scheduler_name}:8786", name
        assert secret_path(worker, _option(argv, "--tls-ca-file")) == ca
        assert secret_path(worker, _option(argv, "--tls-cert")).endswith("worker.pem"), name
        assert secret_path(worker, _option(argv, "--tls-key")).endswith("worker.key"), name
        # the pseudonym key: a secret file, named by the variable the store reads; never the key in the environment
        env = worker["environment"]
        assert "COHORT_DOSIMETRY_PSEUDONYM_KEY" not in env, name
        key_files.add(secret_path(worker, env[KEY_FILE_ENV]))
    assert len(key_files) == 1 and "pseudonym" in next(iter(key_files)), key_files  # one key for every worker

    # whatever runs the flow (a one-off run, a Prefect worker) is a Dask client: it holds the client certificate
    def runs_the_flow(svc: dict) -> bool:
        words = " ".join(_argv(svc.get("entrypoint")) + _argv(svc.get("command")))
        return "cohort-dosimetry" in words or "prefect worker" in words

    runners = {n: s for n, s in services.items() if runs_the_flow(s)}
    assert runners
    for name, runner in runners.items():
        env = runner["environment"]
        assert env.get("DASK_SCHEDULER_ADDRESS", "tls://").startswith("tls://"), name
        assert secret_path(runner, env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"]) == ca, name
        assert secret_path(runner, env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"]).endswith("client.pem"), name
        assert secret_path(runner, env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"]).endswith("client.key"), name
        assert {secret_path(runner, env[KEY_FILE_ENV])} == key_files, name  # the workers' key, no other


def _secret_mount(spec: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) that a file path of a container comes from; fails if the path is not in a Secret volume."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder):
            secret = volumes[mount["name"]].get("secret")
            assert secret, f"{path} is in volume {mount['name']}, not a Secret"
            filename = path.removeprefix(folder)
            items = {i["path"]: i["key"] for i in secret.get("items", [])}
            assert not items or filename in items, f"{path}: the Secret volume does not project {filename}"
            return secret["secretName"], items.get(filename, filename)
    raise AssertionError(f"{path} is on no volume of container {container['name']}")


def test_kubernetes_dask_speaks_tls_with_per_role_certificates_and_workers_get_the_key_as_a_secret():
    docs = _k8s_docs()
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    service = f"{cluster['metadata']['name']}-scheduler"  # the operator's name for the scheduler Service
    ((sched_spec,),) = [_pod_specs(cluster["spec"]["scheduler"])]
    ((worker_spec,),) = [_pod_specs(cluster["spec"]["worker"])]
    ((runner_spec,),) = [_pod_specs(job["spec"])]

    (scheduler,) = sched_spec["containers"]
    argv = scheduler["args"]
    assert argv[:2] == ["dask", "scheduler"] and _option(argv, "--protocol") == "tls"
    ca = _secret_mount(sched_spec, scheduler, _option(argv, "--tls-ca-file"))
    assert ca[1] == "ca.pem"
    assert _secret_mount(sched_spec, scheduler, _option(argv, "--tls-cert"))[1] == "scheduler.pem"
    assert _secret_mount(sched_spec, scheduler, _option(argv, "--tls-key"))[1] == "scheduler.key"
    assert not any("persistentVolumeClaim" in v for v in sched_spec["volumes"]), "the scheduler mounts no data"
    assert KEY_FILE_ENV not in {e["name"] for e in scheduler.get("env", [])}

    (worker,) = worker_spec["containers"]
    argv = worker["args"]
    assert argv[:3] == ["dask", "worker", f"tls://{service}:8786"]
    assert _secret_mount(worker_spec, worker, _option(argv, "--tls-ca-file")) == ca
    assert _secret_mount(worker_spec, worker, _option(argv, "--tls-cert"))[1] == "worker.pem"
    assert _secret_mount(worker_spec, worker, _option(argv, "--tls-key"))[1] == "worker.key"

    (runner,) = runner_spec["containers"]
    argv = runner["args"]
    assert argv[:2] == ["cohort-dosimetry", "run"] and _option(argv, "--address") == f"tls://{service}:8786"
    tls_dir = _option(argv, "--tls-dir")
    for name in ("ca.pem", "client.pem", "client.key"):  # what --tls-dir reads
        assert _secret_mount(runner_spec, runner, f"{tls_dir}/{name}") == (ca[0], name)

    # No pod gets a certificate key of another role, and no pod gets the CA's key.
    for spec, role in ((sched_spec, "scheduler"), (worker_spec, "worker"), (runner_spec, "client")):
        for volume in spec["volumes"]:
            if volume.get("secret", {}).get("secretName") == ca[0]:
                keys = {i["key"] for i in volume["secret"]["items"]}
                assert keys == {"ca.pem", f"{role}.pem", f"{role}.key"}, role

    # The pseudonym key: a file from a Secret, named by the variable the store reads, for workers and flow runner.
    for spec, container in ((worker_spec, worker), (runner_spec, runner)):
        env = {e["name"]: e for e in container["env"]}
        assert "COHORT_DOSIMETRY_PSEUDONYM_KEY" not in env
        secret, _ = _secret_mount(spec, container, env[KEY_FILE_ENV]["value"])
        assert "pseudonym" in secret


def test_slurm_example_starts_its_cluster_with_tls():
    tree = ast.parse((DEPLOY / "slurm" / "cluster.py").read_text())
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "SLURMCluster"]
    keywords = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(keywords["protocol"]) == "tls://"
    assert isinstance(keywords["security"], ast.Name)
    (security,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Security"]
    given = {k.arg for k in security.keywords}
    assert {
        "tls_ca_file",
        "tls_scheduler_cert",
        "tls_scheduler_key",
        "tls_worker_cert",
        "tls_worker_key",
        "tls_client_cert",
        "tls_client_key",
    } <= given
    assert any(k.arg == "require_encryption" and ast.literal_eval(k.value) is True for k in security.keywords)
    called = {getattr(n.func, "id", "") for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "use_tls_dir" in called  # the flow's own client connects with the client certificate


# --- the image: what goes in, and how it is installed ------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    # the matcher below implements the part of Docker's syntax these patterns use
    assert all(not re.search(r"[\[\]\\]", p) for p in patterns), patterns
    return patterns


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out))


def _docker_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the build context) out: the last pattern that matches the path or
    one of its parent folders decides; ``!`` re-includes."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(posixpath.normpath(pattern.removeprefix("!").lstrip("/")))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _tracked_files() -> list[str]:
    if (ROOT / ".git").exists() and shutil.which("git"):
        return subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]


def test_dockerignore_keeps_environments_secrets_and_outputs_out_of_the_image_and_the_package_in():
    patterns = _dockerignore_patterns()
    for path in [
        ".venv/bin/python",
        ".git/config",
        "deploy/.env",
        "deploy/.secrets/tls/ca.key",
        "deploy/.secrets/tls/client.key",
        "deploy/.secrets/pseudonym.key",
        ".secrets/pseudonym.key",
        "demo-output/cohort/.secrets/pseudonym.key",
        "demo-output/dicom/P1/ct/1.dcm",
        "cohort/.secrets/pseudonym.key",
        "cohort/scans.zarr/zarr.json",
        "data/my-cohort/.secrets/x.key",
        "out/report.html",
        "data/study.zarr/zarr.json",
        "elsewhere/.venv/bin/python",
        "some/dir/.env",
        "site/cohort-a/.secrets/tls/ca.pem",
    ]:
        assert _docker_excludes(patterns, path), f"{path} would be copied into the image"
    needed = ["pyproject.toml", "README.md", "deploy/install.sh", "deploy/Dockerfile"]
    needed += [f for f in _tracked_files() if f.startswith(("cohort_dosimetry/", "flows/"))]
    assert len(needed) > 20
    for path in needed:
        assert not _docker_excludes(patterns, path), f"{path} is needed to install the package but is left out"


@pytest.mark.skipif(not ((ROOT / ".git").exists() and shutil.which("git")), reason="not a git checkout")
def test_secrets_and_the_compose_env_file_are_ignored_by_git():
    paths = [
        "deploy/.env",
        "deploy/.secrets/tls/ca.key",
        "deploy/.secrets/tls/client.pem",
        "deploy/.secrets/pseudonym.key",
        "somewhere/cohort/.secrets/pseudonym.key",
    ]
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(paths), done.stdout + done.stderr


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_dockerfile_and_makefile_install_through_the_same_script_and_nothing_else():
    runs = [arg for instruction, arg in _dockerfile_instructions() if instruction == "RUN"]
    docker_installs = [r for r in runs if "deploy/install.sh" in r]
    assert len(docker_installs) == 1
    assert not [r for r in runs if re.search(r"\bpip\b", r) and r not in docker_installs]
    users = [arg for instruction, arg in _dockerfile_instructions() if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")  # the image runs unprivileged

    recipe = _makefile_recipe("$(STAMP)")
    make_installs = [r for r in recipe if "deploy/install.sh" in r]
    assert len(make_installs) == 1 and not [r for r in recipe if re.search(r"\bpip\b", r)]
    # both hand the script a Python and the project itself (editable), differing in extras only
    for command in (docker_installs[0], make_installs[0]):
        argv = shlex.split(command[command.index("deploy/install.sh") :])
        assert argv[2] == "-e" and re.fullmatch(r"\.(\[.*\])?", argv[3].replace("${EXTRAS}", "[x]")), command


def test_install_script_puts_pinned_torch_first_then_the_project_then_removes_the_dataclasses_backport(tmp_path):
    from packaging.requirements import Requirement

    log = tmp_path / "calls"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake_python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX_URL"}
    subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(fake_python), "-e", ".[dev]"], env=env, check=True, timeout=30
    )
    calls = log.read_text().splitlines()
    assert calls == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet torch==2.13.0",
        "-m pip install --quiet -e .[dev]",
        "-m pip uninstall --quiet --yes dataclasses",
    ]
    # the pinned torch satisfies the project's own range, so installing the project installs no other torch
    torch_req = next(
        Requirement(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if Requirement(r).name == "torch"
    )
    assert torch_req.specifier.contains("2.13.0")

    log.unlink()
    subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), str(fake_python), "-e", ".[gpu]"],
        check=True,
        timeout=30,
        env={**env, "TORCH_INDEX_URL": "https://wheels.example/cu130"},
    )
    assert log.read_text().splitlines()[1] == (
        "-m pip install --quiet --index-url https://wheels.example/cu130 torch==2.13.0"
    )
    assert subprocess.run(["sh", str(DEPLOY / "install.sh")], capture_output=True, timeout=30).returncode == 2
