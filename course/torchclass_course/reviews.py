"""The course's own labelled film reviews: the offline stand-in for IMDB.

No installed package ships labelled sentiment text, so the course writes its own. Every
sentence below was written for torchclass. About a third of the reviews are plain: a few
sentences of their own sentiment, from which a model learns what the words mean. The rest hinge
on one sentence of two clauses with opposite sentiment, where the connective decides ("the plot
was dull, but the acting was superb"; "the acting was superb, although the plot was dull") and
"not" flips a clause. Those use the same words for both labels, so a bag of words cannot read
them: a linear model on word counts stays near 70% on this set, and a model that reads the
words in order can reach nearly 100%. Generation is seeded, so every student and every grader
sees the same set.
"""

import random

GENRES = ["thriller", "comedy", "drama", "western", "musical", "horror film", "documentary",
          "romance", "war film", "animated feature", "science fiction film", "mystery"]

POSITIVE = [
    "I loved every minute of this {genre}.",
    "The acting is superb and the script is sharp.",
    "A wonderful, moving story that stayed with me for days.",
    "The director handles every scene with real care.",
    "It is funny, warm and surprisingly clever.",
    "The cast is excellent, especially the lead.",
    "Beautifully shot, with a score that lifts every scene.",
    "One of the best films I have seen this year.",
    "The ending is perfect and earned.",
    "I was gripped from the opening shot to the final credits.",
    "A brilliant {genre} that respects its audience.",
    "The dialogue is witty and the pacing never drags.",
    "It made me laugh and it made me cry.",
    "A delightful surprise; I would happily watch it again.",
    "The performances are honest and deeply affecting.",
    "Smart, stylish and full of heart.",
    "The characters feel like real people, and I cared about all of them.",
    "An outstanding achievement and a joy to watch.",
    "The story is fresh, and the twists are genuinely great.",
    "I recommend it to anyone who loves a good {genre}.",
    "Every performance is strong, and the chemistry is lovely.",
    "The visuals are stunning and the sound design is excellent.",
    "It is the most enjoyable {genre} in years.",
    "A charming, confident film that knows exactly what it wants to be.",
    "The writing is intelligent and the humour lands every time.",
    "A masterpiece of tension and release.",
    "I left the cinema smiling.",
    "Touching, beautiful and wonderfully acted.",
    "The second half is even better than the first.",
    "Highly recommended: a fantastic night out.",
    "The lead gives a brilliant, fearless performance.",
    "A gorgeous film with a big, generous heart.",
    "It is entertaining from start to finish.",
    "Clever plotting and terrific performances make this a winner.",
    "The best {genre} I have seen in a long time.",
    "I adored the characters and the world they live in.",
    "A triumph: bold, funny and moving.",
    "Everything about it works, from the music to the editing.",
    "A rare film that is both exciting and thoughtful.",
    "I was thoroughly impressed and completely entertained.",
]

NEGATIVE = [
    "I hated almost every minute of this {genre}.",
    "The acting is wooden and the script is lazy.",
    "A dull, lifeless story that I forgot on the way home.",
    "The director seems to have no idea what the film is about.",
    "It is boring, predictable and far too long.",
    "The cast is wasted on terrible material.",
    "Ugly to look at, with a score that drowns every scene.",
    "One of the worst films I have seen this year.",
    "The ending is awful and makes no sense.",
    "I checked my watch from the opening shot to the final credits.",
    "A tedious {genre} that treats its audience as fools.",
    "The dialogue is clumsy and the pacing is painfully slow.",
    "The jokes fall flat and the drama never works.",
    "A huge disappointment; I would never watch it again.",
    "The performances are flat and completely unconvincing.",
    "Stupid, shallow and utterly forgettable.",
    "The characters are cardboard, and I did not care about any of them.",
    "A mess from beginning to end and a waste of time.",
    "The story is stale, and the twists are painfully obvious.",
    "I cannot recommend it to anyone, not even fans of the {genre}.",
    "Every performance is weak, and there is no chemistry at all.",
    "The visuals are cheap and the sound is a muddy mess.",
    "It is the most boring {genre} in years.",
    "A confused, clumsy film that has no idea what it wants to be.",
    "The writing is poor and the humour is embarrassing.",
    "A disaster of bad decisions and worse editing.",
    "I left the cinema angry that I had paid for it.",
    "Dreary, ugly and badly acted.",
    "The second half is even worse than the first.",
    "Avoid it: a miserable night out.",
    "The lead gives a lazy, bored performance.",
    "A cynical film with no heart whatsoever.",
    "It is tiresome from start to finish.",
    "Sloppy plotting and terrible performances sink this completely.",
    "The worst {genre} I have seen in a long time.",
    "I disliked the characters and the silly world they live in.",
    "A failure: pointless, humourless and dull.",
    "Nothing about it works, from the music to the editing.",
    "A rare film that is both noisy and boring.",
    "I was thoroughly bored and completely disappointed.",
]

NEUTRAL = [
    "I saw this {genre} on a rainy Sunday afternoon.",
    "It runs for just under two hours.",
    "The film is based on a novel I have not read.",
    "My friend suggested we watch it together.",
    "It was shown as part of a small festival in our town.",
    "The story follows a family over one long summer.",
    "Most of it was filmed on location by the sea.",
    "The trailer gives away a few of the plot points.",
    "It is the director's third feature.",
    "There are subtitles for the scenes in French.",
    "I watched it at home with my parents.",
    "The film opens with a long shot of a city at night.",
    "It is set in a small village in the nineteen fifties.",
    "The soundtrack is available online.",
    "This is a remake of an older {genre}.",
    "The running time felt about right for the story.",
    "The cast includes several newcomers.",
    "It has been released in cinemas and on streaming at the same time.",
    "The plot centres on a detective and her brother.",
    "I went in knowing very little about it.",
]

# Order-dependent reviews are built from clauses: "<aspect> <verb> <quality>". A clause's
# sentiment is its quality's, flipped when the verb is negated.
ASPECTS = ["the acting", "the script", "the music", "the ending", "the camera work", "the pacing",
           "the dialogue", "the lead performance", "the story", "the humour", "the editing",
           "the cast", "the plot", "the soundtrack", "the first act", "the direction"]
VERBS = ["was", "is", "felt", "seemed"]
NEGATED_VERBS = ["was not", "is not", "never felt", "did not seem"]
GOOD = ["superb", "gripping", "moving", "clever", "beautiful", "sharp", "delightful", "brilliant",
        "wonderful", "charming", "excellent", "inventive", "thrilling", "touching"]
BAD = ["dull", "clumsy", "tedious", "flat", "predictable", "forgettable", "awful", "lazy",
       "wooden", "confused", "boring", "shallow", "sloppy", "tiresome"]

# Two clauses of opposite sentiment, and the connective decides which one is the verdict. The
# same words come in both orders, so counting words cannot tell "the plot was dull, but the
# acting was superb" (positive) from "the acting was superb, but the plot was dull" (negative):
# only the order, the connective and "not" can.
CONTRASTS = [
    "{other}, but {verdict}.",
    "{other}, yet {verdict}.",
    "Although {other}, {verdict}.",
    "Even though {other}, {verdict}.",
    "{verdict}, although {other}.",
    "{verdict}, even though {other}.",
]

# Share of reviews made of one contrast sentence (plus neutral remarks); the others are plain
# reviews of sentences of their own sentiment, from which a model learns what the words mean.
CONTRAST_SHARE = 0.65


def _clause(rng: random.Random, aspect: str, positive: bool) -> str:
    negated = rng.random() < 0.35
    quality = rng.choice(GOOD if positive != negated else BAD)
    return f"{aspect} {rng.choice(NEGATED_VERBS if negated else VERBS)} {quality}"


def _contrast(rng: random.Random, label: int) -> str:
    verdict_aspect, other_aspect = rng.sample(ASPECTS, 2)
    sentence = rng.choice(CONTRASTS).format(
        verdict=_clause(rng, verdict_aspect, label == 1),
        other=_clause(rng, other_aspect, label != 1),
    )
    return sentence[0].upper() + sentence[1:]


def _plain(rng: random.Random, label: int) -> list[str]:
    return rng.sample(POSITIVE if label == 1 else NEGATIVE, rng.randint(2, 3))


def _review(rng: random.Random, label: int) -> str:
    genre = rng.choice(GENRES)
    sentences = _plain(rng, label) if rng.random() >= CONTRAST_SHARE else [_contrast(rng, label)]
    if rng.random() < 0.6:
        sentences.insert(0, rng.choice(NEUTRAL))
    if rng.random() < 0.3:
        sentences.append(rng.choice(NEUTRAL))
    return " ".join(s.format(genre=genre) for s in sentences)


def generate(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` reviews, half positive (label 1) and half negative (label 0), shuffled."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    return [_review(rng, label) for label in labels], labels
