"""Corpora: named reference sets, local files and HF datasets as blocks; script formats and dialogue samples; token
balancing; splits."""

from hubstyle.data.clean import (
    detokenize_wikitext,
    milton_blocks,
    paragraph_blocks,
    shakespeare_blocks,
    strip_gutenberg,
    wikitext_blocks,
)
from hubstyle.data.chat import Conversation, dialogue_conversations
from hubstyle.data.dialogue import DialogueSample, extract_dialogue
from hubstyle.data.scripts import (
    SCRIPT_FORMATS,
    Script,
    Turn,
    character_list,
    detect_format,
    parse_script,
    parse_turns,
    read_script,
)
from hubstyle.data.mix import MixReport, StyleMix, balance_by_tokens
from hubstyle.data.sources import (
    NAMED_CORPORA,
    Corpus,
    CorpusFile,
    NamedCorpus,
    data_dir,
    download_cache_dir,
    download_file,
    load_corpus,
    named_corpus_files,
)
from hubstyle.data.splits import Splits, split_blocks

__all__ = [
    "NAMED_CORPORA",
    "SCRIPT_FORMATS",
    "Corpus",
    "Conversation",
    "CorpusFile",
    "DialogueSample",
    "MixReport",
    "NamedCorpus",
    "Script",
    "Splits",
    "StyleMix",
    "Turn",
    "balance_by_tokens",
    "character_list",
    "data_dir",
    "detect_format",
    "detokenize_wikitext",
    "dialogue_conversations",
    "download_cache_dir",
    "download_file",
    "extract_dialogue",
    "load_corpus",
    "milton_blocks",
    "named_corpus_files",
    "paragraph_blocks",
    "parse_script",
    "parse_turns",
    "read_script",
    "shakespeare_blocks",
    "split_blocks",
    "strip_gutenberg",
    "wikitext_blocks",
]
