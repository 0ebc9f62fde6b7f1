//! `fork` and `repeat`: steps that run other steps.
//!
//! `fork` runs its steps in a forked child of the case process (single-threaded outside races,
//! so fork is safe there). The child inherits every object, judges each step by its own
//! `expect`, and reports to the parent over a Unix socket: the step it is starting, then its
//! verdict. With `give`, the verdict carries the named fds (SCM_RIGHTS); the parent then holds
//! them under the same names, replacing its own. The child then leaves with `_exit`, everything
//! else still open: the kernel, not gmemconf, closes what it held.
//!
//! `repeat` runs its steps `times` times over in the case process; an object made in an
//! iteration replaces (and so closes) the one of the same name made in the one before.

use super::interp::{Judged, perform_and_judge};
use super::race::Met;
use super::world::{Obj, VmObj, World};
use crate::suite::step::{ForkSteps, Op, RepeatSteps, Step};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

/// Why nested steps stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stop {
    /// A step's observation broke its expectation.
    Fail(Box<NestedFailure>),
    /// gmemconf could not carry a step out.
    Error(String),
}

/// The inner step that failed, with the path of steps that led to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NestedFailure {
    /// `fork > repeat (iteration 3 of 300) > guest`.
    pub path: String,
    /// file:line:col of the inner step.
    pub location: String,
    pub expected: String,
    pub actual: String,
    pub call: String,
    /// The inner step's own `ref`, else the nearest enclosing step's.
    pub contract: Option<String>,
}

impl Stop {
    /// The same stop, seen from the step `label` that ran the failing one.
    fn within(self, label: &str, outer: &Step) -> Stop {
        match self {
            Stop::Fail(mut f) => {
                f.path = format!("{label} > {}", f.path);
                if f.contract.is_none() {
                    f.contract.clone_from(&outer.reference);
                }
                Stop::Fail(f)
            }
            Stop::Error(m) => Stop::Error(m),
        }
    }
}

/// Runs one step as a nested step: a fork, a repeat, or a plain step judged by its `expect`.
/// `source` is the suite file (for locations); `on_step` hears of each step before it runs.
pub fn run_step(w: &World, step: &Step, met: &Met, source: &str, on_step: &mut dyn FnMut(&Step)) -> Result<(), Stop> {
    on_step(step);
    match &step.op {
        Op::Fork(f) => run_fork(w, step, f, met, source),
        Op::Repeat(r) => run_repeat(w, step, r, met, source, on_step),
        Op::Race(_) => Err(Stop::Error(format!("{source}:{}: a race runs only as a step of the case", step.loc))),
        _ => run_plain(w, step, met, source),
    }
}

fn run_plain(w: &World, step: &Step, met: &Met, source: &str) -> Result<(), Stop> {
    let location = format!("{source}:{}", step.loc);
    match perform_and_judge(w, step, met) {
        Ok(_) => Ok(()),
        Err(Judged::Error(m)) => Err(Stop::Error(format!("{m} (at {location})"))),
        Err(Judged::Mismatch { mismatch, call }) => Err(Stop::Fail(Box::new(NestedFailure {
            path: step.op.name().to_string(),
            location,
            expected: mismatch.expected,
            actual: mismatch.actual,
            call,
            contract: step.reference.clone(),
        }))),
    }
}

fn run_repeat(
    w: &World,
    step: &Step,
    r: &RepeatSteps,
    met: &Met,
    source: &str,
    on_step: &mut dyn FnMut(&Step),
) -> Result<(), Stop> {
    for i in 0..r.times {
        for inner in &r.steps {
            run_step(w, inner, met, source, on_step)
                .map_err(|e| e.within(&format!("repeat (iteration {} of {})", i + 1, r.times), step))?;
        }
    }
    Ok(())
}

/// Most descriptors one `fork` may give back.
pub const MAX_GIVE: usize = 16;
/// Longest text of a failure sent from the child; the socket keeps message boundaries.
const MAX_TEXT: usize = 8192;
const MESSAGE_BUFFER: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
enum FromChild {
    /// The child is starting this step.
    Step { location: String, text: String },
    /// The child's verdict; with `Pass`, the given descriptors ride along in this order.
    Done { result: Option<Stop>, given: Vec<Given> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Given {
    name: String,
    /// A VM of this type, else a plain file.
    vm_type: Option<u64>,
}

fn run_fork(w: &World, step: &Step, f: &ForkSteps, met: &Met, source: &str) -> Result<(), Stop> {
    let (parent_end, child_end) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Stop::Error(format!("socketpair for a fork step: {e}")))?;
    // SAFETY: the case process is single-threaded outside races (a race cannot contain a fork),
    // and the child never returns into the caller: it leaves through _exit, even on a panic.
    match unsafe { fork() } {
        Err(e) => Err(Stop::Error(format!("fork: {e}"))),
        Ok(ForkResult::Child) => {
            drop(parent_end);
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                child_main(w, f, met, source, child_end.as_raw_fd());
            }));
            // SAFETY: _exit ends the child at once, running no destructors: what it holds open
            // is closed by the kernel as the process exits.
            unsafe { libc::_exit(if ran.is_ok() { 0 } else { 101 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(child_end);
            let heard = listen(parent_end.as_raw_fd());
            let status = waitpid(child, None);
            let fork_label = "fork".to_string();
            match heard {
                Err(e) => Err(Stop::Error(format!("reading the forked child's report: {e}"))),
                Ok(Heard { done: Some((None, given, fds)), .. }) => {
                    if !matches!(status, Ok(WaitStatus::Exited(_, 0))) {
                        return Err(Stop::Error(format!("the forked child reported success but ended {status:?}")));
                    }
                    receive_given(w, &f.give, given, fds)
                }
                Ok(Heard { done: Some((Some(stop), _, _)), .. }) => Err(stop.within(&fork_label, step)),
                Ok(Heard { done: None, last_step }) => {
                    let during = last_step
                        .map_or("before its first step".to_string(), |(loc, text)| format!("during `{text}` at {loc}"));
                    let how = match status {
                        Ok(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {}", sig.as_str()),
                        Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
                        other => format!("ended oddly ({other:?})"),
                    };
                    Err(Stop::Fail(Box::new(NestedFailure {
                        path: fork_label,
                        location: format!("{source}:{}", step.loc),
                        expected: "the forked child runs its steps and reports".into(),
                        actual: format!("the child {how} {during} without reporting"),
                        call: "fork()".into(),
                        contract: step.reference.clone(),
                    })))
                }
            }
        }
    }
}

/// What the parent heard from its child.
struct Heard {
    /// The verdict, the descriptions of the given fds, and the fds.
    done: Option<(Option<Stop>, Vec<Given>, Vec<OwnedFd>)>,
    /// The step the child last started (location, text).
    last_step: Option<(String, String)>,
}

fn listen(sock: RawFd) -> Result<Heard, String> {
    let mut heard = Heard { done: None, last_step: None };
    let mut buf = vec![0u8; MESSAGE_BUFFER];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_GIVE]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| format!("recvmsg: {e}"))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| format!("control data: {e}"))? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process for us alone.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let len = msg.bytes;
        if len == 0 {
            return Ok(heard);
        }
        match serde_json::from_slice::<FromChild>(&buf[..len]).map_err(|e| format!("bad message: {e}"))? {
            FromChild::Step { location, text } => heard.last_step = Some((location, text)),
            FromChild::Done { result, given } => {
                heard.done = Some((result, given, fds));
                return Ok(heard);
            }
        }
    }
}

fn child_main(w: &World, f: &ForkSteps, met: &Met, source: &str, sock: RawFd) {
    let send = |m: &FromChild, fds: &[RawFd]| {
        if let Ok(text) = serde_json::to_vec(m) {
            let cmsgs: Vec<ControlMessage> =
                if fds.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(fds)] };
            let _ = sendmsg::<()>(sock, &[IoSlice::new(&text)], &cmsgs, MsgFlags::empty(), None);
        }
    };
    let mut on_step =
        |s: &Step| send(&FromChild::Step { location: format!("{source}:{}", s.loc), text: s.text.clone() }, &[]);
    for step in &f.steps {
        if let Err(stop) = run_step(w, step, met, source, &mut on_step) {
            send(&FromChild::Done { result: Some(shorten(stop)), given: Vec::new() }, &[]);
            return;
        }
    }
    match gather_given(w, &f.give) {
        Ok((given, fds)) => send(&FromChild::Done { result: None, given }, &fds),
        Err(m) => send(&FromChild::Done { result: Some(Stop::Error(m)), given: Vec::new() }, &[]),
    }
}

/// The descriptors to give, in order, with what each is. They stay owned by the child's World
/// until it exits; SCM_RIGHTS gives the parent its own references.
fn gather_given(w: &World, names: &[String]) -> Result<(Vec<Given>, Vec<RawFd>), String> {
    let mut given = Vec::new();
    let mut fds = Vec::new();
    for name in names {
        let (fd, vm_type) = match w.get(name) {
            Some(Obj::File(f)) => (f.as_raw_fd(), None),
            Some(Obj::Vm(v)) => (v.vm.as_raw_fd(), Some(v.vm.vm_type)),
            Some(o) => {
                return Err(format!(
                    "cannot give `{name}`: it is {}; a fork gives fds (files, guest_memfds) and VMs",
                    o.kind()
                ));
            }
            None => return Err(format!("cannot give `{name}`: the child has no such object (closed?)")),
        };
        given.push(Given { name: name.clone(), vm_type });
        fds.push(fd);
    }
    Ok((given, fds))
}

/// Installs the descriptors the child gave under their names, replacing the parent's objects.
fn receive_given(w: &World, wanted: &[String], given: Vec<Given>, fds: Vec<OwnedFd>) -> Result<(), Stop> {
    let names: Vec<&String> = given.iter().map(|g| &g.name).collect();
    if names.len() != wanted.len() || names.iter().zip(wanted).any(|(a, b)| *a != b) || fds.len() != given.len() {
        return Err(Stop::Error(format!(
            "the forked child gave {} descriptors for {names:?}, not {wanted:?}",
            fds.len()
        )));
    }
    for (g, fd) in given.into_iter().zip(fds) {
        let obj = match g.vm_type {
            None => Obj::File(Arc::new(fd)),
            Some(t) => {
                let vm = w.kvm.vm_from_fd(fd, t).map_err(|e| Stop::Error(format!("receiving VM `{}`: {e}", g.name)))?;
                Obj::Vm(Arc::new(VmObj { vm, code: OnceLock::new(), board_slot: OnceLock::new() }))
            }
        };
        w.insert(&g.name, obj);
    }
    Ok(())
}

/// Keeps a child's report within one socket message.
fn shorten(stop: Stop) -> Stop {
    let cut = |s: &mut String| {
        if s.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str(" [...]");
        }
    };
    match stop {
        Stop::Fail(mut f) => {
            for s in [&mut f.expected, &mut f.actual, &mut f.call, &mut f.path] {
                cut(s);
            }
            Stop::Fail(f)
        }
        Stop::Error(mut m) => {
            cut(&mut m);
            Stop::Error(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(path: &str, contract: Option<&str>) -> Stop {
        Stop::Fail(Box::new(NestedFailure {
            path: path.into(),
            location: "s.yaml:3:9".into(),
            expected: "success".into(),
            actual: "errno EIO (5)".into(),
            call: "KVM_CHECK_EXTENSION".into(),
            contract: contract.map(str::to_string),
        }))
    }

    fn outer(reference: Option<&str>) -> Step {
        use crate::suite::expect::{Expect, Outcome};
        Step {
            op: Op::Vm { name: "vm".into(), vm_type: 0 },
            expect: Expect::Plain(Outcome::OK),
            loc: Default::default(),
            text: "vm {}".into(),
            reference: reference.map(str::to_string),
            vm_types: vec![0],
        }
    }

    #[test]
    fn a_nested_failure_names_its_path_and_nearest_contract() {
        let stop = failure("check_extension", None).within("repeat (iteration 2 of 5)", &outer(Some("api.rst 2.")));
        let stop = stop.within("fork", &outer(Some("not this one")));
        let Stop::Fail(f) = stop else { panic!("still a failure") };
        assert_eq!(f.path, "fork > repeat (iteration 2 of 5) > check_extension");
        assert_eq!(f.contract.as_deref(), Some("api.rst 2."));
        let Stop::Fail(f) = failure("vm", Some("own")).within("fork", &outer(Some("outer"))) else { panic!() };
        assert_eq!(f.contract.as_deref(), Some("own"));
    }

    #[test]
    fn long_reports_are_cut_to_fit_one_message() {
        let mut long = failure("vm", None);
        if let Stop::Fail(f) = &mut long {
            f.actual = "é".repeat(MAX_TEXT);
        }
        let Stop::Fail(f) = shorten(long) else { panic!() };
        assert!(f.actual.len() <= MAX_TEXT + 6 && f.actual.ends_with("[...]"));
        let text = serde_json::to_vec(&FromChild::Done { result: Some(Stop::Fail(f)), given: Vec::new() });
        assert!(text.expect("serializable").len() < MESSAGE_BUFFER);
    }
}
