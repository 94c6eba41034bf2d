"""Regenerate items.jsonl from the vaderSentiment 3.3.2 source distribution.

The sdist (not the wheel) carries the human-rated sentence sets of the VADER
paper (Hutto & Gilbert, ICWSM 2014) under additional_resources/. This script
reads the tweet set straight out of the tarball, keeps short, clean tweets that
the raters scored clearly positive or clearly negative, and picks an evenly
spaced, label-balanced sample. It is deterministic: the same sdist always gives
the same items.

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/vader
    python examples/quickstart/make_items.py /tmp/vader/vaderSentiment-3.3.2.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import re
import tarfile
from pathlib import Path

SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
TRUTH = "hutto_ICWSM_2014/tweets_GroundTruth.txt"
RATINGS = "hutto_ICWSM_2014/tweets_anonDataRatings.txt"

PER_LABEL = 50  # items per label
MIN_ABS_MEAN = 1.5  # mean rating is on a -4..+4 scale
MIN_AGREEMENT = 0.9  # share of non-zero ratings that have the label's sign
MIN_CHARS, MAX_CHARS = 15, 100
# Tweets with these markers are noise for a quickstart (mentions, links,
# retweets, hashtags, emoticon-only text) or crude; they are left out.
SKIP = re.compile(
    r"@|https?:|url_removed|\bRT\b|#|fuck|shit|bitch|cunt|piss|dick|whore|slut"
    r"|bastard|retard|\bass\b|nigg|fag|\bhoes?\b|hentai",
    re.IGNORECASE,
)


def read_tweets(sdist: Path) -> list[dict[str, object]]:
    """Each tweet with its mean rating and its raw ratings, in file order."""
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        truth = inner.extractfile(TRUTH).read().decode("utf-8")
        ratings = inner.extractfile(RATINGS).read().decode("utf-8")
    raw: dict[str, list[int]] = {}
    for line in ratings.splitlines():
        if line.strip():
            tweet_id, _mean, _sd, values = line.split("\t")
            raw[tweet_id] = json.loads(values)
    tweets = []
    for line in truth.splitlines():
        if line.strip():
            tweet_id, mean, text = line.split("\t", 2)
            tweets.append(
                {
                    "id": tweet_id,
                    "mean": float(mean),
                    "ratings": raw[tweet_id],
                    "text": " ".join(html.unescape(text).split()),
                }
            )
    return tweets


def label_of(tweet: dict[str, object]) -> str | None:
    """'positive' or 'negative' when the raters clearly agree, else None."""
    mean = tweet["mean"]
    if abs(mean) < MIN_ABS_MEAN:
        return None
    sign = 1 if mean > 0 else -1
    voted = [r for r in tweet["ratings"] if r != 0]
    agree = sum(1 for r in voted if r * sign > 0) / len(voted)
    if agree < MIN_AGREEMENT:
        return None
    return "positive" if sign > 0 else "negative"


def eligible(tweet: dict[str, object]) -> bool:
    text = tweet["text"]
    return MIN_CHARS <= len(text) <= MAX_CHARS and not SKIP.search(text)


def spaced(rows: list[dict[str, object]], count: int) -> list[dict[str, object]]:
    """`count` rows spread evenly over `rows`, keeping their order."""
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} eligible tweets, need {count}")
    return [rows[i * len(rows) // count] for i in range(count)]


def letters(text: str) -> str:
    """The text's letters only, lowercased: equal for the set's reworded copies
    that differ only in case, punctuation or emoticons."""
    return re.sub(r"[^a-z]", "", text.lower())


def build(sdist: Path) -> list[dict[str, str]]:
    by_label: dict[str, list[dict[str, object]]] = {"positive": [], "negative": []}
    seen: set[str] = set()
    for tweet in read_tweets(sdist):
        label = label_of(tweet)
        key = letters(tweet["text"])
        if label and eligible(tweet) and key not in seen:
            seen.add(key)
            by_label[label].append({**tweet, "label": label})
    chosen = [t for rows in by_label.values() for t in spaced(rows, PER_LABEL)]
    chosen.sort(key=lambda t: int(t["id"]))
    return [
        {"id": f"tweet-{t['id']}", "text": t["text"], "label": t["label"]}
        for t in chosen
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="vaderSentiment-3.3.2.tar.gz")
    parser.add_argument(
        "-o", "--out", type=Path, default=Path(__file__).with_name("items.jsonl")
    )
    args = parser.parse_args()
    digest = hashlib.sha256(args.sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{args.sdist}: sha256 {digest}, expected {SDIST_SHA256}")
    items = build(args.sdist)
    with args.out.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    positives = sum(item["label"] == "positive" for item in items)
    print(f"wrote {len(items)} items ({positives} positive) to {args.out}")


if __name__ == "__main__":
    main()
