"""Service discovery and service.conf, the device table, the shipped services' scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from smolfs.arch import Arch
from smolfs.errors import InputError, UsageError
from smolfs.fs.tree import Kind
from smolfs.image import service
from smolfs.image.devices import device_nodes, makedev


def make_service(root: Path, name: str, conf: str | None = None, rc: bool = True) -> Path:
    d = root / name / "etc"
    d.mkdir(parents=True)
    if rc:
        (d / "rc").write_text("#!/bin/sh\necho hi\n")
    if conf is not None:
        (root / name / "service.conf").write_text(conf)
    return root / name


def test_shipped_services_are_complete() -> None:
    base = service.shipped_dir()
    assert service.available(base) == ["base", "bozohttpd", "caddy", "rescue"]
    rescue = service.load("rescue")
    assert rescue.sets == ("rescue",) and rescue.ro is True and rescue.fs is None
    # each shipped service's READY matches the line its etc/rc prints, or names the port
    # its server listens on
    import re
    for name in service.available(base):
        svc = service.load(name)
        if svc.ready and (m := service.NETWORK_READY.fullmatch(svc.ready)):
            assert f":{m[2] or m[5]} " in (svc.etc / "rc").read_text(), name
            continue
        echoed = re.findall(r'^echo "([^"]*)"', (svc.etc / "rc").read_text(), re.M)
        assert svc.ready and any(re.search(svc.ready, line) for line in echoed), name
    assert service.load("caddy").ready == "http:80/"  # ready when it answers HTTP
    assert service.load("base").sets == ("base", "etc")
    web = service.load("bozohttpd")
    assert [p.name for p in web.postinst] == ["10-www.sh"]
    assert rescue.common == base / "common"
    assert {p.name for p in rescue.common.iterdir()} == {"basicrc", "shutdown"}


@pytest.mark.parametrize("path", sorted(
    [*REPO.glob("services/*/etc/rc"), *REPO.glob("services/common/*"),
     *REPO.glob("services/*/postinst/*.sh")]), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_scripts_parse_as_sh(path: Path) -> None:
    r = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def _run_basicrc(tmp_path: Path, fstab: str, *, vioif0: bool = True) -> tuple[str, list[str]]:
    """Source basicrc under bubblewrap (an /etc of its own: the host's stays untouched),
    with fsck_ffs, mount, ifconfig and route replaced by functions that log their
    arguments (fsck_ffs finds the root clean)."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (setup.sh installs it)")
    (tmp_path / "fstab").write_text(fstab)
    log = tmp_path / "log"
    fail = "" if vioif0 else '[ "$*" = vioif0 ] && return 1; '
    script = (f'fsck_ffs() {{ echo "fsck_ffs $*" >>{log}; }}; '
              f'mount() {{ echo "mount $*" >>{log}; }}; '
              f'ifconfig() {{ {fail}echo "ifconfig $*" >>{log}; }}; '
              f'route() {{ echo "route $*" >>{log}; }}; '
              f'. {REPO / "services/common/basicrc"}; '
              'echo "PATH=$PATH"; cat /etc/resolv.conf 2>/dev/null || :')
    r = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/etc", "--ro-bind",
                        str(tmp_path / "fstab"), "/etc/fstab", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0 and "bwrap" in r.stderr:
        pytest.skip(f"bubblewrap cannot run here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    return r.stdout, log.read_text().splitlines() if log.exists() else []


def test_basicrc_sets_up_qemu_user_network(tmp_path: Path) -> None:
    out, calls = _run_basicrc(tmp_path, "# comment\n/dev/ld0a / ffs rw 1 1\n")
    assert calls == ["fsck_ffs -p -q /dev/ld0a", "mount -u /", "mount -a",
                     "ifconfig lo0 127.0.0.1 up", "ifconfig vioif0",
                     "ifconfig vioif0 inet 10.0.2.15/24 up", "route -q add default 10.0.2.2"]
    assert "PATH=/sbin:/bin:/usr/sbin:/usr/bin:/rescue:" in out
    assert "nameserver 10.0.2.3" in out


def test_basicrc_leaves_a_read_only_root_and_no_network_alone(tmp_path: Path) -> None:
    out, calls = _run_basicrc(tmp_path, "/dev/ld0a / ffs ro 1 1\n", vioif0=False)
    assert calls == ["mount -a", "ifconfig lo0 127.0.0.1 up"]  # no remount, no route
    assert "nameserver" not in out


def test_conf_postinst_keys(tmp_path: Path) -> None:
    make_service(tmp_path, "web", "POSTINST_TIMEOUT=2.5\nPOSTINST_BIND='/opt/a /srv/b'\n")
    svc = service.load("web", tmp_path)
    assert (svc.postinst_timeout, svc.postinst_bind) == (2.5, ("/opt/a", "/srv/b"))


def test_conf_parsing(tmp_path: Path) -> None:
    make_service(tmp_path, "web", '# comment\n\nSETS="base, etc comp"\nSIZE_MB=64\n'
                                  "RO=no\nFS='ext2'\n")
    svc = service.load("web", tmp_path)
    assert (svc.sets, svc.size_mb, svc.ro, svc.fs) == (("base", "etc", "comp"), 64, False, "ext2")
    assert (svc.postinst_timeout, svc.postinst_bind) == (None, ())
    # no common/ beside it: the shipped one
    assert svc.common == service.shipped_dir() / "common"


@pytest.mark.parametrize("ready", ["http:80/", "http:8080/health", "tcp:22", "^web: up"])
def test_conf_ready_takes_a_console_line_or_a_guest_port(tmp_path: Path, ready: str) -> None:
    make_service(tmp_path, "web", f"READY={ready}\n")
    assert service.load("web", tmp_path).ready == ready


@pytest.mark.parametrize(("conf", "needle"), [
    ("SETS=base\nPORT=80\n",
     "service.conf:2: unknown key 'PORT' (valid: SIZE_MB, SETS, FS, RO, HOSTNAME, PKGS, "
     "PKG_REPO, POSTINST_TIMEOUT, READY, POSTINST_BIND)"),
    ("HOSTNAME=web_1\n", "service.conf:1: HOSTNAME='web_1': expected a host name"),
    ("POSTINST_TIMEOUT=soon\n", "service.conf:1: POSTINST_TIMEOUT='soon': expected a number "
     "of seconds (0: no limit)"),
    ("POSTINST_TIMEOUT=-1\n", "POSTINST_TIMEOUT='-1': expected a number of seconds"),
    ("POSTINST_BIND=opt/www\n", "POSTINST_BIND='opt/www': expected absolute directory paths"),
    ("READY=\n", "service.conf:1: READY='': expected a regular expression"),
    ("READY=(unclosed\n", "service.conf:1: READY='(unclosed': not a regular expression"),
    ("READY=tcp:70000\n", "service.conf:1: READY='tcp:70000': guest port 70000 out of range"),
    ("SIZE_MB=big\n", "service.conf:1: SIZE_MB='big': expected a whole number"),
    ("RO=maybe\n", "service.conf:1: RO='maybe': expected yes or no"),
    ("FS=zfs\n", "service.conf:1: FS='zfs': expected one of ffs, ext2"),
    ("SETS=\n", "service.conf:1: SETS='': expected one or more set names"),
    ("echo hello\n", "service.conf:1: expected KEY=value, got 'echo hello'"),
])
def test_conf_errors_name_file_and_line(tmp_path: Path, conf: str, needle: str) -> None:
    make_service(tmp_path, "bad", conf)
    with pytest.raises(InputError) as exc:
        service.load("bad", tmp_path)
    assert needle in exc.value.message
    assert str(tmp_path / "bad" / "service.conf") in exc.value.message


def test_unknown_service_lists_available(tmp_path: Path) -> None:
    make_service(tmp_path, "one")
    make_service(tmp_path, "two")
    make_service(tmp_path, "norc", rc=False)
    with pytest.raises(InputError, match=r"unknown service 'three' .*\(available: one, two\)"):
        service.load("three", tmp_path)
    with pytest.raises(InputError, match=r"service 'norc' has no etc/rc"):
        service.load("norc", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        service.load("one", tmp_path / "nowhere")
    for bad in ("../one", "common", ""):
        with pytest.raises(InputError):
            service.load(bad, tmp_path)


def test_postinst_order_and_filter(tmp_path: Path) -> None:
    d = make_service(tmp_path, "s") / "postinst"
    d.mkdir()
    for name in ("20-b.sh", "10-a.sh", "README", "30-c.sh.orig"):
        (d / name).write_text(":\n")
    assert [p.name for p in service.load("s", tmp_path).postinst] == ["10-a.sh", "20-b.sh"]


def test_makedev_matches_netbsd() -> None:
    assert makedev(19, 0) == 4864  # ld0a
    assert makedev(2, 12) == 0x20C
    assert makedev(19, 300) == (19 << 8) | (300 & 0xFF) | ((300 << 12) & 0xFFF00000)


@pytest.mark.parametrize(("arch", "stride", "ksyms"), [("amd64", 16, 85), ("i386", 8, 101)])
def test_device_table(arch: str, stride: int, ksyms: int) -> None:
    nodes = {n.name: n for n in device_nodes(arch)}
    want = {
        "console": (Kind.CHR, 0, 0), "constty": (Kind.CHR, 0, 1), "tty": (Kind.CHR, 1, 0),
        "mem": (Kind.CHR, 2, 0), "kmem": (Kind.CHR, 2, 1), "null": (Kind.CHR, 2, 2),
        "full": (Kind.CHR, 2, 11), "zero": (Kind.CHR, 2, 12), "drum": (Kind.CHR, 4, 0),
        "klog": (Kind.CHR, 7, 0), "tty00": (Kind.CHR, 8, 0), "stdin": (Kind.CHR, 22, 0),
        "stdout": (Kind.CHR, 22, 1), "stderr": (Kind.CHR, 22, 2),
        "random": (Kind.CHR, 46, 0), "urandom": (Kind.CHR, 46, 1),
        "ksyms": (Kind.CHR, ksyms, 0),
    }
    for i, p in enumerate("abcd"):
        want[f"ld0{p}"] = (Kind.BLK, 19, i)
        want[f"rld0{p}"] = (Kind.CHR, 69, i)
    assert {k: (n.kind, n.major, n.minor) for k, n in nodes.items()} == want
    assert Arch(arch).disk_partitions == stride
    assert nodes["console"].mode == 0o600 and nodes["null"].mode == 0o666


def test_aarch64_device_table() -> None:
    """majors.arm32 / majors.aarch64 numbers; OLDMAXPARTITIONS (8) minors per ld unit."""
    nodes = {n.name: (n.kind, n.major, n.minor) for n in device_nodes("aarch64")}
    c, b = Kind.CHR, Kind.BLK
    assert nodes["console"] == (c, 2, 0) and nodes["constty"] == (c, 2, 1)
    assert nodes["tty"] == (c, 3, 0) and nodes["mem"] == (c, 0, 0) and nodes["kmem"] == (c, 0, 1)
    assert nodes["null"] == (c, 0, 2) and nodes["zero"] == (c, 0, 12)
    assert nodes["drum"] == (c, 1, 0) and nodes["klog"] == (c, 5, 0)
    assert nodes["stderr"] == (c, 34, 2) and nodes["random"] == (c, 52, 0)
    assert nodes["ksyms"] == (c, 105, 0) and nodes["plcom0"] == (c, 93, 0)
    assert nodes["ld0a"] == (b, 92, 0) and nodes["ld4a"] == (b, 92, 32)
    assert nodes["rld4d"] == (c, 92, 35)
    assert "tty00" not in nodes
    arch = Arch.parse("evbarm-aarch64")
    assert arch is Arch.AARCH64 and arch.port == "evbarm-aarch64"
    assert arch.root_disk == "ld4" and arch.disk_partitions == 8
    assert arch.kernel_files("GENERIC64") == ("netbsd-GENERIC64.img.gz", "netbsd-GENERIC64.gz")
    assert (arch.qemu_binary, arch.qemu_package) == ("qemu-system-aarch64", "qemu-system-arm")


def test_unknown_arch() -> None:
    with pytest.raises(UsageError,
                       match=r"architecture 'sparc' \(choose from amd64, i386, aarch64\)"):
        Arch.parse("sparc")


# -- the shipped rc scripts, run -------------------------------------------------------
# Each service's /etc/rc runs under a POSIX sh (dash) in a bubblewrap sandbox whose root
# is the service's /etc and /etc/include, with NetBSD's commands replaced by stubs that
# log their arguments: the order of what a booting guest would do is checked, not just
# the syntax.

STUBS = {"sbin/fsck_ffs": 0, "sbin/mount": 0, "sbin/ifconfig": 0, "sbin/route": 0,
         "sbin/halt": 0,
         "sbin/reboot": 0, "sbin/dmesg": 0, "bin/sync": 0, "usr/libexec/httpd": 0}

NETWORK_AND_MOUNTS = [
    "fsck_ffs -p -q /dev/ld0a", "mount -u /", "mount -a", "ifconfig lo0 127.0.0.1 up",
    "ifconfig vioif0",
    "ifconfig vioif0 inet 10.0.2.15/24 up", "route -q add default 10.0.2.2",
]
# no ACPI (grep finds no acpi0 in dmesg): reboot, which ends a QEMU run with -no-reboot
SHUTDOWN = ["sync", "mount -ur /", "dmesg", "grep -q ^acpi0 at ", "reboot -lq"]
RW_FSTAB = "# generated\n/dev/ld0a / ffs rw 1 1\n"


def run_rc(tmp_path: Path, name: str, fstab: str = RW_FSTAB, acpi: bool = False,
           fsck: int = 0) -> tuple[list[str], str, Path]:
    import shutil

    bwrap, dash = shutil.which("bwrap"), shutil.which("dash")
    if not bwrap or not dash:
        pytest.skip("needs bwrap and dash (Debian: bubblewrap, dash)")
    root = tmp_path / "root"
    shutil.copytree(REPO / "services" / name / "etc", root / "etc")
    shutil.copytree(REPO / "services" / "common", root / "etc" / "include")
    (root / "var" / "www").mkdir(parents=True)
    (root / "bin").mkdir()
    shutil.copy(dash, root / "bin" / "sh")
    (root / "etc" / "fstab").write_text(fstab)
    stubs = {**STUBS, "usr/bin/grep": 0 if acpi else 1, "sbin/fsck_ffs": fsck}
    for stub, status in stubs.items():
        path = root / stub
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\necho "${{0##*/}}${{*:+ $*}}" >> /calls\nexit {status}\n')
        path.chmod(0o755)
    argv = [bwrap, "--bind", str(root), "/", "--dev", "/dev", "--proc", "/proc",
            "--unshare-all", "--die-with-parent", "--clearenv"]
    for lib in ("/lib", "/lib64", "/usr/lib", "/usr/lib64"):
        argv += ["--ro-bind-try", lib, lib]
    r = subprocess.run([*argv, "/bin/sh", "/etc/rc"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30, check=False)
    if r.returncode and "bwrap:" in r.stderr:
        pytest.skip(f"bubblewrap cannot make a sandbox here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    calls = (root / "calls").read_text().splitlines()
    # the two sides of shutdown's `dmesg | grep` run at once: log them in pipeline order
    pipe = [c for c in calls if c == "dmesg" or c.startswith("grep ")]
    if len(pipe) == 2:
        i = min(calls.index(pipe[0]), calls.index(pipe[1]))
        calls[i:i + 2] = sorted(pipe, key=lambda c: c != "dmesg")
    return calls, r.stdout, root


@pytest.mark.parametrize("name", ["rescue", "base"])
def test_shell_services_mount_configure_network_then_power_off(tmp_path: Path,
                                                              name: str) -> None:
    calls, out, root = run_rc(tmp_path, name)
    assert calls == NETWORK_AND_MOUNTS + SHUTDOWN
    assert f"{name}: ready" in out
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.2.3\n"


@pytest.mark.parametrize("fstab", [
    "/dev/ld0a / ffs ro 1 1\n", "/dev/ld0a / ext2fs ro,noatime 1 1\n",
    "# /dev/ld0a / ffs rw 1 1\n/dev/ld0a / ffs ro 1 1\n", "",
], ids=["ffs-ro", "ext2-ro-options", "rw-commented-out", "empty"])
def test_read_only_root_is_not_remounted(tmp_path: Path, fstab: str) -> None:
    """``mount -u /`` on NetBSD's read-only root fails ("Operation not supported"):
    basicrc runs it only for a root /etc/fstab says is rw."""
    calls, _, _ = run_rc(tmp_path, "rescue", fstab=fstab)
    assert calls == NETWORK_AND_MOUNTS[2:] + SHUTDOWN


def test_root_repaired_but_not_reloaded_reboots_without_sync(tmp_path: Path) -> None:
    """fsck exits 4 when it repaired the mounted root and the kernel could not reload it:
    going on would write the kernel's stale copy back."""
    calls, out, _ = run_rc(tmp_path, "rescue", fsck=4)
    assert calls[:2] == ["fsck_ffs -p -q /dev/ld0a", "reboot -n"]
    assert "mount -u /" not in calls
    assert "not reloaded; rebooting" in out


def test_root_fsck_failure_leaves_the_root_read_only(tmp_path: Path) -> None:
    calls, out, _ = run_rc(tmp_path, "rescue", fsck=8)
    assert calls == ["fsck_ffs -p -q /dev/ld0a", *NETWORK_AND_MOUNTS[2:], *SHUTDOWN]
    assert "fsck of the root failed (exit 8)" in out


def test_shutdown_powers_off_with_acpi(tmp_path: Path) -> None:
    calls, _, _ = run_rc(tmp_path, "rescue", acpi=True)
    assert calls[-3:] == ["grep -q ^acpi0 at ", "halt -lpq", "reboot -lq"]


def test_web_service_runs_httpd_on_port_80_before_power_off(tmp_path: Path) -> None:
    calls, out, _ = run_rc(tmp_path, "bozohttpd")
    assert calls == [*NETWORK_AND_MOUNTS, "httpd -b -f -s -I 80 /var/www", *SHUTDOWN]
    assert "serving /var/www on port 80" in out
