//! [`SqliteDatasetDictFormat`]: several named splits, each a SQLite sequence, plus metadata
//! (Tango's `DatasetDict`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;

use milonga_sdk::{
    open_envelope, ArtifactHandle, ArtifactWriter, Codec, Envelope, Error, Format, Result,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::SqliteSequenceBuilder;
use super::compress::SqliteCompression;
use super::schema::format_id;
use super::sequence::{SqliteSequence, SqliteSequenceFormat};
use crate::codec::PostcardCodec;

const DATASET_ID: &str = "milonga.sqlite_dataset_dict";
const DATASET_VERSION: u32 = 1;
/// The file that lists the splits and holds the metadata.
const INDEX_FILE: &str = "dataset_dict";

/// Named splits plus metadata: the value written by [`SqliteDatasetDictFormat`].
///
/// `S` is what each split is made of when writing: any `IntoIterator` of items (never collected),
/// or a [`SqliteSequenceBuilder`] whose file is published as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetDict<S, M = ()> {
    /// The splits by name (`[A-Za-z0-9_.-]`, 1..=128 bytes, not starting with `.`).
    pub splits: BTreeMap<String, S>,
    /// Metadata stored beside the splits (postcard).
    pub metadata: M,
}

/// The file of split `name`.
fn split_file(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(format!("splits/{name}.sqlite"))
    } else {
        Err(Error::Encode {
            what: format!("split name {name:?}"),
            reason: "split names are 1..=128 bytes of [A-Za-z0-9_.-], not starting with '.'".into(),
        })
    }
}

/// A [`DatasetDict`] stored as one SQLite sequence file per split (`splits/<name>.sqlite`) and a
/// `dataset_dict` file (envelope, then postcard of the split names and the metadata), read back
/// as a [`SqliteDatasetDict`] of lazy [`SqliteSequence`]s.
pub struct SqliteDatasetDictFormat<T, M = (), C = PostcardCodec> {
    seq: SqliteSequenceFormat<T, C>,
    id: String,
    _meta: PhantomData<fn() -> M>,
}

impl<T, M, C> fmt::Debug for SqliteDatasetDictFormat<T, M, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDatasetDictFormat")
            .field("id", &self.id)
            .finish()
    }
}

impl<T, M> SqliteDatasetDictFormat<T, M, PostcardCodec>
where
    PostcardCodec: Codec<T>,
{
    /// Items as postcard, compressed in blocks ([`SqliteCompression::blocks`]).
    pub fn new() -> Self {
        Self::with_codec(PostcardCodec)
    }
}

impl<T, M> Default for SqliteDatasetDictFormat<T, M, PostcardCodec>
where
    PostcardCodec: Codec<T>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<T, M, C: Codec<T>> SqliteDatasetDictFormat<T, M, C> {
    /// Items encoded with `codec`. The format id is `milonga.sqlite_dataset_dict`, followed by
    /// `+<codec id>` for codecs other than postcard.
    pub fn with_codec(codec: C) -> Self {
        let id = format_id(DATASET_ID, codec.id());
        SqliteDatasetDictFormat {
            seq: SqliteSequenceFormat::with_codec(codec),
            id,
            _meta: PhantomData,
        }
    }

    /// Sets how the values of every split are compressed.
    #[must_use]
    pub fn with_compression(mut self, compression: SqliteCompression) -> Self {
        self.seq = self.seq.with_compression(compression);
        self
    }

    fn write_index(
        &self,
        names: Vec<String>,
        metadata: &M,
        artifact: &dyn ArtifactWriter,
    ) -> Result<()>
    where
        M: Serialize,
    {
        let mut bytes = Vec::new();
        Envelope::new(&self.id, DATASET_VERSION).encode_into(&mut bytes)?;
        let bytes = postcard::to_extend(&(names, metadata), bytes).map_err(|e| Error::Encode {
            what: INDEX_FILE.into(),
            reason: e.to_string(),
        })?;
        let mut f = artifact.create(INDEX_FILE)?;
        f.write_all(&bytes).map_err(|e| Error::io(INDEX_FILE, e))?;
        f.finish()?;
        Ok(())
    }

    fn read_all(&self, artifact: ArtifactHandle) -> Result<SqliteDatasetDict<T, M, C>>
    where
        M: DeserializeOwned,
    {
        let bytes = artifact.bytes(INDEX_FILE)?;
        let (_, payload) = open_envelope((*bytes).as_ref(), &self.id, DATASET_VERSION, INDEX_FILE)?;
        let (names, metadata): (Vec<String>, M) =
            postcard::from_bytes(payload).map_err(|e| Error::Decode {
                file: INDEX_FILE.into(),
                offset: 0,
                reason: e.to_string(),
            })?;
        let mut splits = BTreeMap::new();
        for name in names {
            let file = split_file(&name).map_err(|_| {
                Error::corrupt(INDEX_FILE, 0, format!("invalid split name {name:?}"))
            })?;
            let seq = self.seq.open_file(artifact.clone(), &file)?;
            splits.insert(name, seq);
        }
        Ok(SqliteDatasetDict { splits, metadata })
    }
}

impl<T, M, C, I> Format<DatasetDict<I, M>> for SqliteDatasetDictFormat<T, M, C>
where
    T: 'static,
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec<T> + 'static,
    I: IntoIterator<Item = T>,
{
    type Output = SqliteDatasetDict<T, M, C>;

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u32 {
        DATASET_VERSION
    }

    fn write(&self, value: DatasetDict<I, M>, artifact: &dyn ArtifactWriter) -> Result<()> {
        let mut names = Vec::new();
        for name in value.splits.keys() {
            split_file(name)?;
        }
        for (name, items) in value.splits {
            self.seq.write_file(items, artifact, &split_file(&name)?)?;
            names.push(name);
        }
        self.write_index(names, &value.metadata, artifact)
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output> {
        self.read_all(artifact)
    }
}

impl<T, M, C> Format<DatasetDict<SqliteSequenceBuilder<T, C>, M>>
    for SqliteDatasetDictFormat<T, M, C>
where
    T: 'static,
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec<T> + 'static,
{
    type Output = SqliteDatasetDict<T, M, C>;

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u32 {
        DATASET_VERSION
    }

    /// Publishes each split's builder file as it is (a move where the backend allows).
    fn write(
        &self,
        value: DatasetDict<SqliteSequenceBuilder<T, C>, M>,
        artifact: &dyn ArtifactWriter,
    ) -> Result<()> {
        let mut names = Vec::new();
        for name in value.splits.keys() {
            split_file(name)?;
        }
        for (name, builder) in value.splits {
            builder.finish_as(artifact, &split_file(&name)?)?;
            names.push(name);
        }
        self.write_index(names, &value.metadata, artifact)
    }

    fn read(&self, artifact: ArtifactHandle) -> Result<Self::Output> {
        self.read_all(artifact)
    }
}

/// A stored [`DatasetDict`]: lazy splits and the metadata.
pub struct SqliteDatasetDict<T, M = (), C = PostcardCodec> {
    /// The splits by name.
    pub splits: BTreeMap<String, SqliteSequence<T, C>>,
    /// The metadata.
    pub metadata: M,
}

impl<T, M: fmt::Debug, C> fmt::Debug for SqliteDatasetDict<T, M, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDatasetDict")
            .field("splits", &self.splits.keys().collect::<Vec<_>>())
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<T, M, C> SqliteDatasetDict<T, M, C> {
    /// The split named `name`.
    pub fn split(&self, name: &str) -> Option<&SqliteSequence<T, C>> {
        self.splits.get(name)
    }

    /// The split names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.splits.keys().map(String::as_str)
    }
}
