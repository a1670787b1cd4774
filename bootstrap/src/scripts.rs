//! The shell scripts the bootstrap runs on the target, as root. Each takes its values
//! as positional arguments (never spliced into the text).

/// Prints `key=value` lines about the target; changes nothing.
pub const CHECK: &str = r#"set -u
if [ -r /etc/os-release ]; then . /etc/os-release; fi
printf 'id=%s\n' "${ID-}"
printf 'id_like=%s\n' "${ID_LIKE-}"
printf 'pretty=%s\n' "${PRETTY_NAME-unknown}"
printf 'arch=%s\n' "$(uname -m)"
printf 'pid1=%s\n' "$(cat /proc/1/comm 2>/dev/null)"
printf 'hostname=%s\n' "$(hostname 2>/dev/null || cat /etc/hostname)"
printf 'uid=%s\n' "$(id -u)"
sum() { if [ -f "$1" ]; then sha256sum "$1" | cut -d' ' -f1; fi; }
printf 'agent_sha256=%s\n' "$(sum /usr/bin/infra-agent)"
printf 'fetch_sha256=%s\n' "$(sum /usr/bin/infra-agent-fetch)"
printf 'unit_sha256=%s\n' "$(sum /lib/systemd/system/infra-agent.service)"
printf 'deb_status=%s\n' "$(dpkg-query -W -f '${db:Status-Abbrev}${Version}' infra-agent 2>/dev/null)"
printf 'deb_sha256=%s\n' "$(cat /var/lib/infra-agent/bootstrap/agent-deb.sha256 2>/dev/null)"
have() { if [ -f "$1" ]; then echo yes; else echo no; fi; }
printf 'deploy_key=%s\n' "$(have /etc/infra-agent/deploy_key)"
printf 'git_known_hosts=%s\n' "$(have /etc/infra-agent/known_hosts)"
printf 'disabled=%s\n' "$(cat /var/lib/infra-agent/disabled.json 2>/dev/null | tr -d '\n')"
"#;

/// `$1`: the upload directory; `$2` and `$3`: the sha256 the agent binary and its
/// fetch helper (`infra-agent-fetch`, installed beside it) must have. Exit 3 when an
/// upload does not match.
pub const INSTALL: &str = r#"set -eu
check() {
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "$1 has sha256 $got, expected $2" >&2
    exit 3
  fi
}
check "$1/infra-agent" "$2"
check "$1/infra-agent-fetch" "$3"
sh "$1/install.sh" "$1/infra-agent"
"#;

/// Where [`INSTALL_DEB`] records the sha256 of the package it installed, so a re-run
/// with the same package changes nothing.
pub const DEB_RECORD: &str = "/var/lib/infra-agent/bootstrap/agent-deb.sha256";

/// `$1`: the uploaded package; `$2`: the sha256 it must have (exit 3 when it does
/// not). Installs it with apt-get, which also installs missing dependencies; when
/// that fails (a fresh image often has no package lists yet) it refreshes the lists
/// and tries once more. `--reinstall` replaces a package of the same version built
/// anew; `--allow-downgrades` installs an older one, as asked. `INFRA_AGENT_NO_START=1`
/// keeps the postinst from starting the daemon: that happens only after the admin
/// login was proven. Records the sha256 in `$3`.
pub const INSTALL_DEB: &str = r#"set -eu
got=$(sha256sum "$1" | cut -d' ' -f1)
if [ "$got" != "$2" ]; then
  echo "$1 has sha256 $got, expected $2" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive INFRA_AGENT_NO_START=1
apt_install() {
  apt-get install -y -q --reinstall --allow-downgrades -o DPkg::Lock::Timeout=120 "$1"
}
if ! apt_install "$1"; then
  echo "apt-get could not install the package; refreshing the package lists and trying again" >&2
  apt-get update -q -o DPkg::Lock::Timeout=120
  apt_install "$1"
fi
install -d -m 0700 "$(dirname "$3")"
echo "$2" >"$3"
"#;

/// Pairs of arguments `SRC DEST`: installs SRC as DEST (root, 0600) unless DEST
/// already has that content and mode; prints `wrote DEST` or `unchanged DEST`.
pub const CONFIGURE: &str = r#"set -eu
install -d -m 0700 /etc/infra-agent
while [ $# -ge 2 ]; do
  src=$1; dest=$2; shift 2
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a:%u "$dest")" = "600:0" ]; then
    echo "unchanged $dest"
    continue
  fi
  install -m 0600 -o root -g root "$src" "$dest.infra-tmp"
  mv -f "$dest.infra-tmp" "$dest"
  echo "wrote $dest"
done
"#;

/// Prints the host's agent.toml (`$1`), or nothing when there is none.
pub const READ_AGENT_TOML: &str = r#"if [ -f "$1" ]; then cat "$1"; fi
"#;

/// Where the sshd configuration is saved before the first converge.
pub const SSH_BACKUP: &str = "/var/lib/infra-agent/bootstrap/etc-ssh.tar";
/// Where a restore moves the sshd configuration that failed.
pub const SSH_FAILED: &str = "/etc/ssh.infra-bootstrap-failed";

/// Saves /etc/ssh to [`SSH_BACKUP`] (`$1`); re-enables an agent that an earlier
/// bootstrap disabled (its reason starts with `infra-bootstrap:`).
pub const BEFORE_CONVERGE: &str = r#"set -eu
install -d -m 0700 "$(dirname "$1")"
tar -C /etc -cpf "$1.tmp" ssh
mv -f "$1.tmp" "$1"
if grep -qs '"infra-bootstrap:' /var/lib/infra-agent/disabled.json; then
  infra-agent enable >/dev/null
fi
"#;

/// The first converge.
pub const CONVERGE: &str =
    "NO_COLOR=1 exec infra-agent --once --config /etc/infra-agent/agent.toml 2>&1";

/// Puts back /etc/ssh from `$1` (the configuration that failed goes to `$2`),
/// checks it with `sshd -t` and reloads sshd; then disables the agent with reason `$3`.
pub const RESTORE: &str = r#"set -eu
tmp=$(mktemp -d /etc/.infra-bootstrap-ssh.XXXXXX)
tar -C "$tmp" -xpf "$1"
rm -rf "$2"
mv /etc/ssh "$2"
mv "$tmp/ssh" /etc/ssh
rmdir "$tmp"
sshd -t
systemctl reload ssh.service || systemctl restart ssh.service
infra-agent disable --reason "$3" >/dev/null
"#;

/// Enables and starts the daemon (prints `unchanged` when it already was both);
/// `$1` = `reload` reloads a running daemon first (its agent.toml changed).
pub const START: &str = r#"set -eu
if [ "$(systemctl is-enabled infra-agent 2>/dev/null || true)" = enabled ] && systemctl is-active -q infra-agent; then
  if [ "$1" = reload ]; then systemctl reload infra-agent; echo reloaded; else echo unchanged; fi
  exit 0
fi
systemctl enable --now infra-agent
systemctl is-active infra-agent
"#;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use infra_agent::process::{Cmd, CmdOutput, run};

    use super::*;
    use infra_agent::resource::download::sha256_hex as sha256;

    /// [`INSTALL`] on an upload directory `dir`, with the two checksums.
    fn install(dir: &Path, agent_sha: &str, fetch_sha: &str) -> CmdOutput {
        run(&Cmd::new("sh").args([
            "-c",
            INSTALL,
            "sh",
            &dir.to_string_lossy(),
            agent_sha,
            fetch_sha,
        ]))
        .expect("sh runs")
    }

    /// The upload of a bare binary: the agent, its fetch helper, and a stand-in for
    /// install.sh that records its arguments instead of installing anything.
    #[test]
    fn install_checks_the_agent_and_its_helper_before_running_install_sh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("infra-agent"), "agent").unwrap();
        std::fs::write(dir.path().join("infra-agent-fetch"), "helper").unwrap();
        let ran = dir.path().join("ran");
        std::fs::write(
            dir.path().join("install.sh"),
            format!("echo \"$@\" >{}\n", ran.display()),
        )
        .unwrap();
        let (agent, helper) = (sha256(b"agent"), sha256(b"helper"));

        let out = install(dir.path(), &agent, &sha256(b"another helper"));
        assert_eq!(out.code, Some(3), "{}", out.message());
        assert!(
            out.message().contains("infra-agent-fetch has sha256"),
            "{}",
            out.message()
        );
        let out = install(dir.path(), &sha256(b"another agent"), &helper);
        assert_eq!(out.code, Some(3), "{}", out.message());
        assert!(
            out.message().contains("infra-agent has sha256"),
            "{}",
            out.message()
        );
        assert!(!ran.exists(), "install.sh ran after a bad checksum");

        let out = install(dir.path(), &agent, &helper);
        assert!(out.success(), "{}", out.message());
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            format!("{}/infra-agent\n", dir.path().display())
        );
    }
}
