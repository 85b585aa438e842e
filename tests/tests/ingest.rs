//! Ingesting a local file into an artifact: a file the artifact does not own (outside its
//! scratch and work directories) is copied and left where it is; only the step's own files are
//! moved.

use std::path::PathBuf;

use milonga::sdk::{ArtifactHandle, ArtifactWriter, Format, Result};
use milonga::{BoxError, Context, Step, Workspace};
use serde::Serialize;

/// Publishes the file at a path as the artifact file `data`.
#[derive(Default)]
struct IngestFormat;

impl Format<PathBuf> for IngestFormat {
    type Output = Vec<u8>;
    fn id(&self) -> &str {
        "tests.ingest"
    }
    fn version(&self) -> u32 {
        1
    }
    fn write(&self, path: PathBuf, artifact: &dyn ArtifactWriter) -> Result<()> {
        artifact.ingest("data", &path)?;
        Ok(())
    }
    fn read(&self, artifact: ArtifactHandle) -> Result<Vec<u8>> {
        Ok((*artifact.bytes("data")?).as_ref().to_vec())
    }
}

/// Returns the path of a file it did not write (outside the workspace), or of one it wrote in
/// its work directory.
#[derive(Serialize)]
struct Publish {
    path: Option<PathBuf>,
    /// Return a symbolic link to `path` made in the work directory instead.
    link: bool,
}

impl Step for Publish {
    const NAME: &'static str = "tests::Publish";
    type Output = PathBuf;
    type Format = IngestFormat;
    fn run(&self, ctx: &mut Context<'_>) -> std::result::Result<PathBuf, BoxError> {
        match &self.path {
            Some(p) if self.link => {
                let l = ctx.work_dir()?.join("link.bin");
                std::os::unix::fs::symlink(p, &l)?;
                Ok(l)
            }
            Some(p) => Ok(p.clone()),
            None => {
                let p = ctx.work_dir()?.join("own.bin");
                std::fs::write(&p, b"written by the step")?;
                Ok(p)
            }
        }
    }
}

#[test]
fn ingest_never_takes_a_file_outside_the_workspace() {
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious.txt");
    std::fs::write(&precious, b"not yours").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let step = Publish {
        path: Some(precious.clone()),
        link: false,
    };
    assert_eq!(&*step.result(&ws).unwrap(), b"not yours");
    assert_eq!(
        std::fs::read(&precious).expect("the ingested file outside the workspace is still there"),
        b"not yours"
    );

    // Nor through a symbolic link in the step's work directory.
    std::fs::write(&precious, b"still not yours").unwrap();
    let linked = Publish {
        path: Some(precious.clone()),
        link: true,
    };
    assert_eq!(&*linked.result(&ws).unwrap(), b"still not yours");
    assert_eq!(std::fs::read(&precious).unwrap(), b"still not yours");

    // A file the step wrote in its own work directory is published too.
    let own = Publish {
        path: None,
        link: false,
    };
    assert_eq!(&*own.result(&ws).unwrap(), b"written by the step");
}
