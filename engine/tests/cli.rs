//! The `milonga` command-line tool against a real workspace.

use std::process::Command;

use milonga::{BoxError, Context, PostcardFormat, Step, Workspace};
use serde::Serialize;

#[derive(Serialize)]
struct Hello {
    name: String,
}

impl Step for Hello {
    const NAME: &'static str = "Hello";
    type Output = String;
    type Format = PostcardFormat;
    fn run(&self, _ctx: &mut Context<'_>) -> Result<String, BoxError> {
        Ok(format!("hello, {}", self.name))
    }
}

fn cli(ws: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_milonga"))
        .arg(ws)
        .args(args)
        .output()
        .expect("run the cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn steps_info_verify_rm_gc() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Hello {
        name: "world".into(),
    };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();

    let (code, out) = cli(dir.path(), &["steps"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id) && out.contains("COMPLETED"), "{out}");

    let (code, out) = cli(dir.path(), &["info", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("milonga.postcard v") && out.contains("data"),
        "{out}"
    );

    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems"), "{out}");

    // Corrupt the data object: verify must fail and name the step.
    let file = ws.artifact(&id).unwrap().files()[0].clone();
    let path = milonga::store::LocalStore::open(dir.path())
        .unwrap()
        .object_path(&file.id);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PROBLEM") && out.contains(&id), "{out}");

    let (code, out) = cli(dir.path(), &["rm", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(dir.path(), &["gc", "--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 2 objects"), "{out}");
    let (_, out) = cli(dir.path(), &["steps"]);
    assert!(out.contains("0 steps"), "{out}");

    let (code, out) = cli(dir.path(), &["info", "Nope-123"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn verify_repair_quarantines_and_the_next_result_recomputes() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Hello {
        name: "repair".into(),
    };
    step.result(&ws).unwrap();
    let id = step.unique_id().unwrap();
    let file = ws.artifact(&id).unwrap().files()[0].clone();
    let path = milonga::store::LocalStore::open(dir.path())
        .unwrap()
        .object_path(&file.id);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    drop(ws);

    let (code, out) = cli(dir.path(), &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("quarantined") && out.contains(&format!("reset {id}")),
        "{out}"
    );
    assert!(!path.exists(), "the damaged object was moved aside");
    let quarantined = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);

    // The next result() computes the step again and stores a fresh copy.
    let ws = Workspace::open(dir.path()).unwrap();
    assert_eq!(*step.result(&ws).unwrap(), "hello, repair");
    assert!(path.exists());
    let (code, out) = cli(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no problems"), "{out}");
}
