"""The pool of modern user turns a chat set is distilled from: chatterbot-corpus's questions and hubstyle's templates
(how-to questions, opinions, first-person news, writing and describing requests), minus anything equal or close to an
evaluation prompt. The evaluation prompts mix questions, statements ("It has been raining all week."), requests
("Write a birthday message for my dad.") and sentence starts; a pool of questions alone taught the style model to
answer questions in the style and everything else in plain English.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubstyle.restyle.distill import DistillConfig

_QUESTION_START = re.compile(r"^(what|how|why|who|where|when|which|can|could|should|is|are|do|does|tell|give|"
                             r"describe|explain|any)\b", re.I)
_CODE_WORDS = re.compile(r"\b(python|javascript|typescript|java|c\+\+|sql|helm|docker|kubernetes|regex|code|"
                         r"function|class|interface|sort|algorithm|program)\b", re.I)

TASKS = [
    "fix a leaking tap", "start running in the morning", "save money on groceries", "learn to play the guitar",
    "write a good cover letter", "keep my houseplants alive", "fall asleep faster", "choose a second-hand bike",
    "make friends after moving to a new city", "prepare for a job interview", "clean a very dirty oven",
    "teach my dog to come back when called", "plan a cheap holiday", "stop putting things off",
    "get better at speaking in public", "pick a good watermelon", "study for an exam in one week",
    "tell my landlord the heating is broken", "remember people's names", "start a vegetable garden",
    "say no to extra work politely", "calm down before a big meeting", "keep my inbox under control",
    "choose a present for my grandmother", "get my children to eat vegetables", "learn a new language as an adult",
    "paint a small room", "apologise to a friend I let down", "keep warm in a cold flat", "bake bread at home",
    "organise a surprise party", "find a hobby I will stick with", "write a short speech for a wedding",
    "get rid of ants in the kitchen", "keep a conversation going on a first date", "look after a sick cat",
    "walk further without getting tired", "cut down on sugar", "sell my old furniture", "keep my bike from rusting",
]
TOPICS = [
    "working from home", "electric cars", "social media", "online shopping", "city parks", "night trains",
    "video games", "modern art museums", "fast food", "long summer holidays", "learning to swim", "public libraries",
    "growing old", "moving to the countryside", "keeping bees", "winter in the mountains", "board games",
    "living with flatmates", "the first day at a new job", "getting a puppy", "camping in the rain",
    "a crowded underground train", "a long-distance friendship", "reading before bed", "the smell of the sea",
    "a broken umbrella", "a noisy neighbour", "learning to drive", "a lost wallet", "a very old bookshop",
]
TASK_TEMPLATES = ["How do I {x}?", "What is the best way to {x}?", "Can you help me {x}?"]
TOPIC_TEMPLATES = ["What do you think about {x}?", "Tell me something about {x}.", "Is there anything good about {x}?"]

# More everyday tasks, opinion topics, first-person news and requests: kinds of user turn the evaluation prompts
# hold and chatterbot's questions do not (none repeats an evaluation prompt; `prompt_pool` drops near ones too).
MORE_TASKS = [
    "iron a shirt without creases", "make a cheap dinner for six people", "keep my flat tidy with little time",
    "wake up without hitting snooze", "write a complaint to a shop", "pack a suitcase so nothing creases",
    "make small talk at a party", "keep a diary every day", "choose a good pair of walking boots",
    "stop biting my nails", "help a friend who is grieving", "plan a day out with small children",
    "negotiate the price of a used car", "get over a fear of flying", "fix a squeaky door",
    "make my own pasta sauce", "save energy at home in winter", "read more books in a year",
    "teach a child to ride a bike", "write a letter to my future self", "be on time for once",
    "stay friends with my ex", "choose a name for a kitten", "make a long journey with a toddler",
    "host a dinner for my in-laws", "decorate a small bedroom", "sharpen a pencil without a sharpener",
    "learn to juggle", "take better photos with my phone", "spend a rainy Sunday well",
    "tell a friend a hard truth", "keep my car clean", "write a birthday card to my aunt", "grow herbs on a windowsill",
    "stop worrying about money", "choose a good mattress", "make a room feel bigger", "comfort a crying baby",
    "stay awake on a long drive", "tell my parents I am moving away", "mend a hole in a jumper",
    "make friends with my neighbours", "keep fit without a gym", "get rid of a cold quickly", "write a good toast",
    "carve a pumpkin", "make a good first impression", "sleep on a noisy train", "cheer up a sad friend",
    "choose wine for a dinner party", "stop my glasses from fogging up", "keep mice out of the shed",
    "forgive someone who hurt me", "pick a good holiday book", "plan a walking holiday", "buy a second-hand piano",
    "make my wedding cheaper", "keep a goldfish healthy", "get my money back from a shop", "clean silver cutlery",
]
MORE_TOPICS = [
    "autumn walks", "self-checkout machines", "wedding speeches", "second-hand clothes", "early mornings",
    "street food markets", "family group chats", "houseplants", "night shifts", "long queues at the post office",
    "coffee shops that play loud music", "picnics", "gardening in a small yard", "trying a new recipe",
    "learning to knit", "staying up late", "cooking for one", "weekend markets", "moving house",
    "the last day of school",
]
EVENTS = [
    "My car broke down on the motorway.", "I burnt the toast this morning.", "Our landlord is putting the rent up.",
    "I passed my driving test today.", "My best friend is moving to Australia.", "The dishwasher is leaking again.",
    "I got a parking ticket outside my own house.", "We adopted a rescue dog last week.",
    "My neighbour's tree fell onto our fence.", "I finally finished my first novel.",
    "The heating in the office is broken.", "I dropped my keys down a drain.", "My grandmother turns ninety today.",
    "Our wedding is only three weeks away.", "I was promoted at work today.", "The bakery sold out before I got there.",
    "My son broke his arm at football practice.", "I left my umbrella on the bus.", "The supermarket has no bread left.",
    "Our holiday cottage has no hot water.", "I have a dentist appointment this afternoon.",
    "My laptop will not turn on.", "The kids are bored and it is only Monday.", "I am learning to bake sourdough.",
    "My garden is full of weeds.", "I have too many emails to answer.", "My friend forgot our lunch date.",
    "The plumber never turned up.", "I won a prize in the village raffle.", "Our cat brought a mouse into the kitchen.",
    "I have to give a presentation tomorrow.", "My flatmate never does the washing up.",
    "We are moving to a smaller house.", "I ran my first five kilometres today.", "The library is closing down.",
    "My mother is coming to stay for a month.", "I think my bicycle was stolen.", "The new neighbours seem friendly.",
    "I lost my wallet at the cinema.", "My train ticket was twice the usual price.", "Our team won the quiz night.",
    "I broke my favourite mug.", "The bakery on the corner is closing.", "I am nervous about my driving lesson.",
    "My daughter starts school in September.", "We ran out of milk again.", "I cannot decide what to cook tonight.",
    "My knee hurts when I climb stairs.", "The wifi keeps dropping in the evening.", "I got lost on the way to the park.",
    "My sourdough starter died.", "The boiler made a loud bang this morning.", "I have been offered a job abroad.",
    "Our street is being dug up for new pipes.", "My phone screen cracked when I dropped it.",
    "I am hosting Christmas for the first time.", "The dog ate my sandwich.", "I feel lonely since I moved here.",
    "My friend keeps cancelling our plans.", "The car park at the hospital is full.", "I am going camping next week.",
    "We found a hedgehog in the garden.", "My tomatoes have finally turned red.", "I spilled wine on the new carpet.",
    "Our village fete is on Saturday.", "I have a job interview on Thursday.", "My old teacher sent me a letter.",
    "The washing machine flooded the bathroom.", "I was stuck in a lift for an hour.", "My son wants to quit piano.",
    "I made a new friend at the gym.", "Our football club needs a new coach.", "I ate too much cake at the party.",
    "My friend's band is playing tonight.", "I have been asked to give a eulogy.", "The ferry is running late.",
    "I planted an apple tree today.", "My glasses broke this morning.", "The shop gave me the wrong change.",
    "I am starting a course in pottery.", "We missed our connecting flight.", "My niece learned to walk today.",
    "The council has closed the swimming baths.", "I forgot my lines in the school play.",
    "Our guests arrive in an hour and nothing is ready.", "I have been sleeping badly for weeks.",
    "A fox keeps raiding our bins.", "My favourite restaurant changed its menu.", "I have not seen the sun in days.",
    "The bridge into town is closed for repairs.",
]
REQUESTS = [
    "Write a thank-you note to my neighbour.", "Write a short poem about the sea.", "Write an apology for being late.",
    "Write a message to welcome a new colleague.", "Write a note asking my flatmate to be quieter.",
    "Write a toast for my parents' anniversary.", "Write a get-well message for a friend in hospital.",
    "Write a short invitation to a garden party.", "Write a farewell message for a colleague who is leaving.",
    "Write a letter to a friend I have not seen for years.", "Write a reply accepting a job offer.",
    "Write a short advert for a lost cat.", "Write a note to the milkman.",
    "Write a message congratulating a friend on a new baby.", "Write a short review of a seaside hotel.",
    "Describe a walk through a forest in autumn.", "Describe a busy kitchen before dinner.",
    "Describe an old man feeding pigeons in a park.", "Describe a sunrise over the mountains.",
    "Describe a crowded railway station.", "Describe your favourite season.", "Describe a small fishing village.",
    "Describe a child's first day at school.", "Describe the sound of rain on a tin roof.",
    "Describe a cosy evening by the fire.", "Describe a city at night.", "Describe an empty theatre.",
    "Describe a garden after a storm.", "Describe a long drive through the desert.", "Describe a wedding feast.",
    "Write a short note to thank a nurse.", "Write a message to cheer up a friend who failed an exam.",
    "Write a limerick about a cat.", "Write a short letter asking the council to fix a pothole.",
    "Write a postcard from a holiday by the lake.", "Write a greeting for a new neighbour.",
    "Write a reminder to my team about Friday's deadline.", "Write a short love letter.",
    "Write a message asking my boss for a day off.", "Write a note for a lunchbox.",
    "Describe a library on a winter afternoon.", "Describe a horse race.", "Describe a harbour at dusk.",
    "Describe the first snow of the year.", "Describe a market stall selling fruit.",
    "Describe a grandmother's kitchen.", "Describe a ship leaving port.", "Describe a quiet church.",
    "Describe a football match in the rain.", "Describe a garden party.",
]


def chatterbot_questions() -> list[str]:
    """Return chatterbot-corpus's first lines that are plain questions of 4+ words (no code requests), deduplicated."""
    from hubstyle.data import load_corpus

    seen, out = set(), []
    for block in load_corpus("chatterbot").blocks:
        line = " ".join(block.split("\n")[0].split())
        key = line.lower().rstrip("?.! ")
        if len(line.split()) < 4 or key in seen or _CODE_WORDS.search(line) or not _QUESTION_START.match(line):
            continue
        seen.add(key)
        out.append(line[0].upper() + line[1:])
    return out


def template_prompts() -> list[str]:
    """Return hubstyle's templated user turns: every kind interleaved (so the first N holds all of them), and within
    a kind each task or topic under every template."""
    return _interleave(
        [t.format(x=x) for x in TASKS for t in TASK_TEMPLATES],
        [t.format(x=x) for x in TOPICS for t in TOPIC_TEMPLATES],
        EVENTS,
        REQUESTS,
        [t.format(x=x) for x in MORE_TASKS for t in TASK_TEMPLATES],
        [t.format(x=x) for x in MORE_TOPICS for t in TOPIC_TEMPLATES],
    )


def _interleave(*kinds: list) -> list:
    """Return the items of ``kinds`` taken one from each in turn (a kind that runs out is skipped), so that the first
    N items of the result hold every kind."""
    return [kind[i] for i in range(max(map(len, kinds))) for kind in kinds if i < len(kind)]


def evaluation_prompts(files: list[str]) -> list[str]:
    """Return the prompts of hubstyle's evaluation prompt files (what the pool must never hold)."""
    from hubstyle.evaluate.prompts import load_prompts, prompts_dir

    return [p for name in files for p in load_prompts(prompts_dir() / name)]


def prompt_pool(cfg: DistillConfig, encoder=None) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Return ((origin, prompt) pairs in a fixed order, counts of what was dropped as too close to an evaluation
    prompt) for the pool: template questions interleaved with chatterbot's."""
    from hubstyle.evaluate.answers import embed, load_encoder

    pool = _interleave([("template", p) for p in template_prompts()],
                       [("chatterbot", p) for p in chatterbot_questions()])
    evals = evaluation_prompts(cfg.eval_prompt_files)
    exact = {e.lower().strip() for e in evals}
    encoder = encoder or load_encoder()
    sims = embed(encoder, [p for _, p in pool], 64) @ embed(encoder, evals, 64).T
    nearest = sims.max(dim=1).values.tolist()
    kept, dropped = [], {"equal_to_evaluation_prompt": 0, "close_to_evaluation_prompt": 0}
    for (origin, prompt), near in zip(pool, nearest):
        if prompt.lower().strip() in exact:
            dropped["equal_to_evaluation_prompt"] += 1
        elif near >= cfg.leak_cosine:
            dropped["close_to_evaluation_prompt"] += 1
        else:
            kept.append((origin, prompt))
    return (kept[: cfg.max_prompts] if cfg.max_prompts else kept), dropped
