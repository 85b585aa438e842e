//! The format of uncacheable steps: none.

use milonga_sdk::{ArtifactHandle, ArtifactWriter, Error, Format};

/// The "format" of an uncacheable step ([`Step::CACHEABLE`](crate::Step::CACHEABLE) `= false`):
/// its output is passed to consumers in memory as it is, so `read` gives the output type itself.
/// Writing or reading bytes is an error: nothing of such a step is ever stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unstored;

impl<T: Send + Sync + 'static> Format<T> for Unstored {
    type Output = T;

    fn id(&self) -> &str {
        "milonga.unstored"
    }

    fn version(&self) -> u32 {
        1
    }

    fn write(&self, _value: T, _artifact: &dyn ArtifactWriter) -> milonga_sdk::Result<()> {
        Err(Error::unsupported(
            "the Unstored format never writes: the step must not be CACHEABLE",
        ))
    }

    fn read(&self, _artifact: ArtifactHandle) -> milonga_sdk::Result<T> {
        Err(Error::unsupported(
            "the Unstored format has nothing to read: the step is not CACHEABLE",
        ))
    }
}
