"""Script formats: each layout read into the right turns, detected or chosen, and one-line errors when none fits.

Every sample here was written for these tests (the lantern-keeper scenes are no real play or film).
"""

from __future__ import annotations

import json

import pytest

from hubstyle.config import SCRIPT_FORMATS, RunConfig, from_dict, load_config
from hubstyle.data import (
    character_list,
    detect_format,
    dialogue_conversations,
    extract_dialogue,
    parse_script,
    parse_turns,
    read_script,
)
from hubstyle.errors import HubstyleError


def pairs(turns) -> list[tuple[str | None, str]]:
    return [(t.speaker, t.text) for t in turns]


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


COLON = """[A harbour office. Dusk.]
Mara: The lamp is smoking again.
Jonah: Trim the wick, then.
(Mara sighs)
mara: I trimmed it
an hour ago.
"""

COLON_BLOCK = """MARA:
The lamp is smoking again.

JONAH:
Trim the wick, then.
Thus it goes:
every night.

MARA:
I trimmed it an hour ago.
"""

# Gutenberg layout, speakers abbreviated at the start of the speech line, with a character list.
PLAY_PERSONAE = """THE LANTERN-KEEPER

DRAMATIS PERSONAE

ODALRIC, keeper of the harbour light.
BRISEIS, a fisherman's daughter.

ACT I

SCENE I. A stone stair below the lantern.

Enter Odalric with a lamp.

Odal. The wind is up again, and all the boats are out.
Who climbs my stair at such an hour as this?

Bri. A friend, if friends may come without a name.

Odal. Then hear what keeps a keeper from his bed:
The gulls are silent and the bell is still.

Bri. Hear what I say:
The tide will turn before the second bell.

[Exit Briseis.]

Odal. So goes she down, and leaves the stair to me.

Exeunt.
"""

# The same scene without a character list: abbreviations alone on their line, an alias map names them.
PLAY_ALONE = """ACT I

SCENE I. A stone stair below the lantern.

[Enter Odalric with a lamp.]

Odal.
The wind is up again, and all the boats are out.
Who climbs my stair at such an hour as this?

Bri.
A friend, if friends may come without a name.

Odal.
Then hear what keeps a keeper from his bed:
The gulls are silent and the bell is still.

Bri.
Hear what I say:
The tide will turn before the second bell.

Exit Briseis.

Odal.
So goes she down, and leaves the stair to me.
"""

SCREENPLAY = """INT. LIGHTHOUSE KITCHEN - NIGHT

Rain hammers the window. MARA (40s) stirs a pot.

                    MARA
          You're late.

                    JONAH (O.S.)
          The ferry stalled.

Jonah enters, soaked.

                    MARA
               (not turning)
          Sit. Eat.
          Then talk.

                    JONAH (CONT'D)
          Thank you.

                                        CUT TO:

EXT. PIER - DAWN
"""

SRT = """1
00:00:01,000 --> 00:00:03,200
MARA: You're late again.

2
00:00:03,400 --> 00:00:05,000
- JONAH: The ferry stalled.
- MARA: It always does.

3
00:00:05,500 --> 00:00:07,000
[thunder]

4
00:00:07,100 --> 00:00:09,000
JONAH: Then I'll walk
next time.

5
00:00:09,100 --> 00:00:10,000
JONAH: Along the cliff.

6
00:00:10,500 --> 00:00:12,000
Nobody answers.
"""

VTT = """WEBVTT

NOTE written for the hubstyle tests

00:00.000 --> 00:02.000
<v Mara>You're late again.</v>

intro-2
00:02.500 --> 00:04.000
<v.loud Jonah>The ferry <i>stalled</i>.

00:04.500 --> 00:06.000
<i>Somewhere a bell rings.</i>

00:06.500 --> 00:08.000
<v Mara>Sit down.
"""

MESSAGES = "\n".join(json.dumps(row) for row in [
    {"messages": [{"role": "system", "content": "Answer as the keeper."},
                  {"role": "user", "content": "Is the light lit?"},
                  {"role": "assistant", "content": "Since dusk, as ever."}]},
    {"messages": [{"role": "user", "name": "Jonah", "content": "Any boats out?"},
                  {"role": "assistant", "name": "Mara", "content": "Two, and both late."}]},
]) + "\n"

SPEECHES = [
    ("Odalric", "The wind is up again, and all the boats are out.\nWho climbs my stair at such an hour as this?"),
    ("Briseis", "A friend, if friends may come without a name."),
    ("Odalric", "Then hear what keeps a keeper from his bed:\nThe gulls are silent and the bell is still."),
    ("Briseis", "Hear what I say:\nThe tide will turn before the second bell."),
    ("Odalric", "So goes she down, and leaves the stair to me."),
]


def test_colon_formats_read_as_before():
    assert pairs(parse_turns(COLON, "colon")) == [
        (None, "[A harbour office. Dusk.]"),
        ("Mara", "The lamp is smoking again."),
        ("Jonah", "Trim the wick, then."),
        (None, "(Mara sighs)"),
        ("mara", "I trimmed it\nan hour ago."),
    ]
    assert pairs(parse_turns(COLON_BLOCK, "colon")) == [
        ("MARA", "The lamp is smoking again."),
        ("JONAH", "Trim the wick, then.\nThus it goes:\nevery night."),  # a verse line's colon inside a speech
        ("MARA", "I trimmed it an hour ago."),
    ]


def test_gutenberg_abbreviations_map_to_the_character_list():
    assert character_list(PLAY_PERSONAE) == ["ODALRIC", "BRISEIS"]
    script = parse_script(PLAY_PERSONAE, "gutenberg")
    assert [(t.speaker, t.text) for t in script.spoken()] == SPEECHES
    narration = [t.text for t in script.turns if t.speaker is None]
    assert {"ACT I", "SCENE I. A stone stair below the lantern.", "Enter Odalric with a lamp.", "[Exit Briseis.]",
            "Exeunt."} <= set(narration)
    assert not any(t.speaker and t.speaker.startswith("Hear") for t in script.turns)  # "Hear what I say:" is verse
    assert script.key("Odal.") == script.key("ODALRIC") == "odalric"


def test_gutenberg_speaker_extracted_under_full_name_from_list_or_aliases():
    samples = extract_dialogue(PLAY_PERSONAE, "Briseis", rounds=1)  # format auto
    assert [s.response for s in samples] == [
        "Briseis: A friend, if friends may come without a name.",
        "Briseis: Hear what I say:\nThe tide will turn before the second bell.",
    ]
    assert samples[1].context == "Odalric: Then hear what keeps a keeper from his bed: The gulls are silent and the bell is still."
    assert extract_dialogue(PLAY_PERSONAE, "Bri.", rounds=1) == samples  # the abbreviation finds the full name

    aliases = {"Odal.": "Odalric", "Bri": "Briseis"}  # with or without the period
    alone = parse_script(PLAY_ALONE, aliases=aliases)
    assert alone.format == "gutenberg"
    assert [(t.speaker, t.text) for t in alone.spoken()] == SPEECHES
    assert extract_dialogue(PLAY_ALONE, "Briseis", rounds=1, aliases=aliases) == samples
    odalric = dialogue_conversations(PLAY_ALONE, "odalric", rounds=1, aliases=aliases)
    assert [c.messages[-1] for c in odalric][-1] == {
        "role": "assistant", "content": "So goes she down, and leaves the stair to me.", "name": "Odalric"}
    assert odalric[-1].messages[0]["name"] == "Briseis"
    # without the alias map the abbreviations are the names, and the error lists them
    with pytest.raises(HubstyleError) as excinfo:
        extract_dialogue(PLAY_ALONE, "Briseis")
    message = one_line(excinfo)
    assert "'Odal' (3), 'Bri' (2)" in message and "read as format 'gutenberg'" in message


def test_gutenberg_inline_names_need_to_be_known_and_verse_colons_never_are():
    text = """HESPER. Go. I will follow when the bell has rung:
Go. Tell the boats the light is lit.
Fair. Fair is the night, and all the stars are out.

CORIN. Peace. The keeper sleeps.

HESPER. Then wake him:
Wake him with a song.
"""
    assert pairs([t for t in parse_turns(text, "gutenberg")]) == [
        ("HESPER", "Go. I will follow when the bell has rung:\nGo. Tell the boats the light is lit.\n"
                   "Fair. Fair is the night, and all the stars are out."),
        ("CORIN", "Peace. The keeper sleeps."),
        ("HESPER", "Then wake him:\nWake him with a song."),
    ]
    listed = "Persons Represented\n\nFIRST WATCHMAN, a guard.\nLady Wren, Corin, Hesper, sisters.\n\nACT I\n\n"
    assert character_list(listed) == ["FIRST WATCHMAN", "Lady Wren", "Corin", "Hesper"]
    turns = parse_turns(listed + "First Watch. Who goes there?\n\nLady W. A friend.\n", "gutenberg")
    assert [(t.speaker, t.text) for t in turns if t.speaker] == [("First Watchman", "Who goes there?"),
                                                                 ("Lady Wren", "A friend.")]


def test_screenplay_cues_parentheticals_and_headings():
    assert pairs(parse_turns(SCREENPLAY, "screenplay")) == [
        (None, "INT. LIGHTHOUSE KITCHEN - NIGHT"),
        (None, "Rain hammers the window. MARA (40s) stirs a pot."),
        ("MARA", "You're late."),
        ("JONAH", "The ferry stalled."),
        (None, "Jonah enters, soaked."),
        ("MARA", "Sit. Eat.\nThen talk."),
        ("JONAH", "Thank you."),
        (None, "CUT TO:"),
        (None, "EXT. PIER - DAWN"),
    ]


def test_subtitles_speaker_prefixes_and_unprefixed_cues():
    assert pairs(parse_turns(SRT, "subtitles")) == [
        ("MARA", "You're late again."),
        ("JONAH", "The ferry stalled."),
        ("MARA", "It always does."),
        (None, "[thunder]"),
        ("JONAH", "Then I'll walk\nnext time.\nAlong the cliff."),  # the next cue of the same speaker joins the turn
        (None, "Nobody answers."),  # no speaker prefix: narration, continuing nothing
    ]
    assert pairs(parse_turns(VTT, "subtitles")) == [
        ("Mara", "You're late again."),
        ("Jonah", "The ferry stalled."),
        (None, "Somewhere a bell rings."),
        ("Mara", "Sit down."),
    ]


def test_messages_jsonl_roles_and_names():
    assert pairs(parse_turns(MESSAGES, "messages")) == [
        (None, "Answer as the keeper."),
        ("user", "Is the light lit?"),
        ("assistant", "Since dusk, as ever."),
        ("Jonah", "Any boats out?"),
        ("Mara", "Two, and both late."),
    ]


@pytest.mark.parametrize("text, fmt", [
    (COLON, "colon"), (COLON_BLOCK, "colon"), (PLAY_PERSONAE, "gutenberg"), (PLAY_ALONE, "gutenberg"),
    (SCREENPLAY, "screenplay"), (SRT, "subtitles"), (VTT, "subtitles"), (MESSAGES, "messages"),
])
def test_auto_detects_each_format(text, fmt):
    best, scores = detect_format(text)
    assert best == fmt and set(scores) == set(SCRIPT_FORMATS[1:])
    assert scores[fmt] > max(s for f, s in scores.items() if f != fmt)
    script = parse_script(text)
    assert script.format == fmt and script.turns == parse_turns(text, fmt)


def test_explicit_format_overrides_detection():
    as_colon = parse_script(PLAY_ALONE, "colon")  # the mistake the issue shows: verse lines as speakers
    assert as_colon.format == "colon" and as_colon.tried == ("colon",)
    assert {t.speaker for t in as_colon.spoken()} == {"Hear what I say"}
    with pytest.raises(HubstyleError) as excinfo:
        read_script(COLON_BLOCK, "screenplay")
    message = one_line(excinfo)
    assert "formats tried: screenplay (" in message and "colon (" not in message
    assert "the text reads as format 'colon'" in message


def test_text_in_no_format_names_the_formats_tried_and_the_speaker_like_lines():
    text = "Harbour notes, kept for the tests.\nOil for the lamp is low.\n\nRemember:\n\nTHE TIDE TABLE.\n"
    with pytest.raises(HubstyleError) as excinfo:
        extract_dialogue(text, "Mara")
    message = one_line(excinfo)
    assert "found no 'Name: line' or other speaker turns" in message
    for fmt in SCRIPT_FORMATS[1:]:
        assert f"{fmt} (" in message
    assert "line 4 'Remember:', line 6 'THE TIDE TABLE.'" in message
    with pytest.raises(HubstyleError) as excinfo:
        dialogue_conversations("Just prose, and more prose.\nNothing else here.", None)
    assert "no line looked like a speaker label" in one_line(excinfo)
    with pytest.raises(HubstyleError, match="unknown script format 'srt': valid formats are auto, colon"):
        parse_turns(SRT, "srt")


def test_config_format_and_aliases_are_validated_and_passed_through(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dialogue:\n  format: gutenburg\n", encoding="utf-8")
    with pytest.raises(HubstyleError) as excinfo:
        load_config(path)
    assert one_line(excinfo) == (f"{path}: 'dialogue.format' is 'gutenburg': did you mean 'gutenberg'? valid values: "
                                 "auto, colon, gutenberg, screenplay, subtitles, messages")
    for aliases, shown in [(["Ham."], "['Ham.']"), ({"Ham.": 3}, "'Ham.': 3"), ({"": "Hamlet"}, "'': 'Hamlet'")]:
        with pytest.raises(HubstyleError) as excinfo:
            from_dict(RunConfig, {"dialogue": {"aliases": aliases}})
        assert "'dialogue.aliases'" in one_line(excinfo) and shown in str(excinfo.value)

    from hubstyle.dataset import style_blocks

    script = tmp_path / "lantern.txt"
    script.write_text(PLAY_ALONE, encoding="utf-8")
    path.write_text(f"corpora:\n  - source: {script}\ndialogue:\n  speaker: Briseis\n  render: text\n  rounds: 1\n"
                    "  format: gutenberg\n  aliases: {Odal.: Odalric, Bri.: Briseis}\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.dialogue.aliases == {"Odal.": "Odalric", "Bri.": "Briseis"}
    assert style_blocks(cfg)["lantern"] == [s.text() for s in extract_dialogue(PLAY_PERSONAE, "Briseis", rounds=1)]
    cfg = from_dict(RunConfig, {"corpora": [{"source": str(script)}],
                                "dialogue": {"speaker": "Briseis", "format": "screenplay"}})
    with pytest.raises(HubstyleError, match="formats tried: screenplay .*reads as format 'gutenberg'"):
        style_blocks(cfg)
