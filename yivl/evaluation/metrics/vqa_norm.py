"""VQA answer normalisation: the official ``vqaEval.py`` steps and the EvalAI/mmf answer processor.

Both share the punctuation list, the number words, the articles and the contractions table of
GT-Vision-Lab/VQA ``vqaEval.py`` (master); they differ only in a first ``word_tokenize`` step (EvalAI)
and in the digit-comma regex. Every quirk is kept on purpose, because scores are only comparable
when the text is normalised byte for byte like the reference scorers.
"""

from __future__ import annotations

import re

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
"""The official table; keys with capitals (``Im``, ``Ive``, ``Id've``) never match (text is lowercased)."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
"""No apostrophe, ``:``, ``#`` or ``.``: those survive (periods have their own rule)."""

# The official regex: "(?!<=\d)" is a lookahead for the text "<=digit", which never holds at a
# period, so only the trailing "(?!\d)" matters: a period NOT followed by a digit is deleted.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
# Both scorers call ``PERIOD_STRIP.sub("", text, re.UNICODE)``: the flag lands in ``count``, so at
# most re.UNICODE (== 32) periods are removed.
PERIOD_COUNT_QUIRK = int(re.UNICODE)


def process_punctuation(text: str, comma_strip: re.Pattern[str] = OFFICIAL_COMMA_STRIP) -> str:
    """``processPunctuation``: delete or space out punctuation, then drop periods not before a digit.

    A mark is deleted when it touches a space in the *input* text, or when the input contains a
    digit-comma-digit anywhere (``comma_strip``); otherwise it becomes a space.
    """
    out = text
    has_digit_comma = comma_strip.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_COUNT_QUIRK)


def process_digit_article(text: str) -> str:
    """``processDigitArticle``: lowercase, number words to digits, drop articles, fix contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def official_normalize(text: str) -> str:
    """The full official normalisation (whitespace, punctuation, digits/articles) of one answer."""
    return process_digit_article(process_punctuation(strip_whitespace(text)))


def strip_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip: applied to every answer by ``vqaEval.py``."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def evalai_normalize(text: str) -> str:
    """mmf ``EvalAIAnswerProcessor.__call__`` (LLaVA ``m4c_evaluator``, lmms-eval), step for step.

    ``word_tokenize`` first lowercases, deletes every ``,`` and ``?`` and splits ``'s`` into ``" 's"``;
    since the commas are gone, the digit-comma rule of the punctuation step can no longer fire.
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = strip_whitespace(text)
    text = process_punctuation(text, comma_strip=EVALAI_COMMA_STRIP)
    return process_digit_article(text)
