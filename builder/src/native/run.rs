//! `RUN` in an isolated environment: new mount, PID, UTS, IPC and network namespaces, a fresh
//! `/proc`, a minimal `/dev`, then `chroot` into the stage's root file system. Needs root on
//! Linux; where the host refuses, the error points to the `docker` backend.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, chroot, fork, setgid, setgroups, setuid};

use crate::error::{Error, Result};

/// Devices a build step may expect, bind-mounted from the host into a private `/dev`.
const DEVICES: &[&str] = &["null", "zero", "random", "urandom", "full", "tty"];

/// How to run one command.
pub struct RunSpec {
    pub root: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub uid: u32,
    pub gid: u32,
}

/// What a finished command left: its exit code and the last lines of its output.
pub struct RunResult {
    pub code: i32,
    pub tail: Vec<String>,
}

/// Runs the command, passing each output line to `on_line`.
pub fn run(spec: &RunSpec, mut on_line: impl FnMut(&str)) -> Result<RunResult> {
    for dir in ["proc", "dev", "sys"] {
        let path = spec.root.join(dir);
        if path.symlink_metadata().is_err() {
            std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        }
    }
    let workdir = spec.root.join(spec.workdir.trim_start_matches('/'));
    if workdir.symlink_metadata().is_err() {
        std::fs::create_dir_all(&workdir).map_err(Error::io(&workdir))?;
    }
    let cstr = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).expect("paths have no NUL");
    let root = cstr(&spec.root);
    let proc_dir = cstr(&spec.root.join("proc"));
    let dev_dir = cstr(&spec.root.join("dev"));
    let devices: Vec<(CString, CString)> = DEVICES
        .iter()
        .filter(|d| Path::new("/dev").join(d).exists())
        .map(|d| (cstr(&Path::new("/dev").join(d)), cstr(&spec.root.join("dev").join(d))))
        .collect();
    let workdir = CString::new(if spec.workdir.is_empty() { "/" } else { &spec.workdir }).expect("no NUL");
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));

    let (reader, writer) = std::io::pipe().map_err(Error::io(&spec.root))?;
    let mut command = Command::new(&spec.argv[0]);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(Error::io(&spec.root))?)
        .stderr(writer);
    // SAFETY: the closure runs in the forked child before exec; it only calls system calls
    // and allocates nothing the parent's threads could hold locks on beyond what glibc's
    // fork handlers reset.
    unsafe {
        command.pre_exec(move || {
            let io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
            unshare(
                CloneFlags::CLONE_NEWNS
                    | CloneFlags::CLONE_NEWPID
                    | CloneFlags::CLONE_NEWUTS
                    | CloneFlags::CLONE_NEWIPC
                    | CloneFlags::CLONE_NEWNET,
            )
            .map_err(io)?;
            // The command must be PID 1 of the new namespace: fork once more and let this
            // process only relay the exit status.
            if let ForkResult::Parent { child } = fork().map_err(io)? {
                // The relay never execs, so it would keep every descriptor it inherited for
                // as long as the command runs: other builds' files open for writing (whose
                // `exec` then fails with ETXTBSY) and the spawn error pipe (so `spawn` would
                // not return before the command ends). It needs none of them.
                nix::libc::close_range(0, u32::MAX, 0);
                let code = loop {
                    match waitpid(child, None) {
                        Ok(WaitStatus::Exited(_, code)) => break code,
                        Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
                        Ok(_) => continue,
                        Err(_) => break 255,
                    }
                };
                nix::libc::_exit(code);
            }
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
                .map_err(io)?;
            mount(Some("proc"), proc_dir.as_c_str(), Some("proc"), MsFlags::empty(), None::<&str>)
                .map_err(io)?;
            mount(Some("tmpfs"), dev_dir.as_c_str(), Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755"))
                .map_err(io)?;
            for (host, inside) in &devices {
                let fd = nix::libc::open(inside.as_ptr(), nix::libc::O_CREAT | nix::libc::O_WRONLY, 0o666);
                if fd >= 0 {
                    nix::libc::close(fd);
                }
                mount(Some(host.as_c_str()), inside.as_c_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(io)?;
            }
            chroot(root.as_c_str()).map_err(io)?;
            chdir(workdir.as_c_str()).map_err(io)?;
            setgroups(&[gid]).map_err(io)?;
            setgid(gid).map_err(io)?;
            setuid(uid).map_err(io)?;
            Ok(())
        });
    }
    let mut child = spawn(&mut command).map_err(|e| match e.raw_os_error() {
        Some(code) if code == nix::libc::EPERM || code == nix::libc::EINVAL || code == nix::libc::ENOSYS => {
            Error::IsolationUnavailable(e.to_string())
        }
        _ => Error::Io { path: spec.root.clone(), source: e },
    })?;
    drop(command);
    let mut tail = VecDeque::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_else(|e| format!("<unreadable output: {e}>"));
        on_line(&line);
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().map_err(Error::io(&spec.root))?;
    Ok(RunResult { code: status.code().unwrap_or(255), tail: tail.into() })
}

/// Spawns, retrying `exec`'s ETXTBSY. Another build's stage writes executables while this one
/// forks: between a concurrent fork and its exec, the forked child briefly holds those files
/// open for writing, and exec of such a file fails. The window is short, so a few retries
/// clear it.
fn spawn(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut delay = std::time::Duration::from_millis(5);
    for _ in 0..6 {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => std::thread::sleep(delay),
            other => return other,
        }
        delay *= 2;
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn spec(root: &Path, argv: &[&str]) -> RunSpec {
        RunSpec {
            root: root.to_path_buf(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            workdir: "/".into(),
            uid: 0,
            gid: 0,
        }
    }

    fn root_with_busybox() -> Option<tempfile::TempDir> {
        let busybox = Path::new("/bin/busybox");
        if !nix::unistd::geteuid().is_root() || !busybox.exists() {
            eprintln!("skipped: needs root and /bin/busybox (busybox-static) for isolated RUN");
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
        Some(root)
    }

    /// Output is read while the command runs: more than a pipe holds must not stall it (the
    /// relay once kept `spawn` waiting for the command's end, so a chatty step hung forever).
    #[test]
    fn output_larger_than_a_pipe_streams_while_the_command_runs() {
        let Some(root) = root_with_busybox() else { return };
        let mut lines = 0;
        let result = run(&spec(root.path(), &["/bin/busybox", "seq", "1", "50000"]), |_| lines += 1).unwrap();
        assert_eq!((result.code, lines), (0, 50000));
        assert_eq!(result.tail.last().map(String::as_str), Some("50000"));
    }

    /// A file open for writing while another build's `RUN` starts must be executable once it
    /// is closed, even though that `RUN` is still going: before the relay closed what it
    /// inherited, it held the file open for the whole command and exec failed with ETXTBSY.
    #[test]
    fn a_running_command_does_not_keep_other_stages_files_open() {
        let Some(long) = root_with_busybox() else { return };
        let short = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(short.path().join("bin")).unwrap();
        let mut writing = std::fs::File::create(short.path().join("bin/busybox")).unwrap();
        writing.write_all(&std::fs::read("/bin/busybox").unwrap()).unwrap();
        writing.set_permissions(std::fs::Permissions::from_mode(0o755)).unwrap();

        let long_root = long.path().to_path_buf();
        let sleeper =
            std::thread::spawn(move || run(&spec(&long_root, &["/bin/busybox", "sleep", "2"]), |_| {}));
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(writing);
        match run(&spec(short.path(), &["/bin/busybox", "true"]), |_| {}) {
            Err(Error::IsolationUnavailable(why)) => eprintln!("skipped: isolation unavailable here: {why}"),
            other => assert_eq!(other.map(|r| r.code).map_err(|e| e.to_string()), Ok(0)),
        }
        assert_eq!(sleeper.join().unwrap().map(|r| r.code).map_err(|e| e.to_string()), Ok(0));
    }
}
