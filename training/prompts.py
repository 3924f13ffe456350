"""Things a user says to a voice assistant, made from templates and word lists (no data set needed).

`generate_prompts(n, seed)` gives n distinct utterances mixing questions, commands and small
talk, with spoken-style numbers and the occasional politeness prefix or suffix.
"""

from __future__ import annotations

import random
import re

_WORDS: dict[str, list[str]] = {
    "country": ["France", "Japan", "Brazil", "Canada", "Kenya", "Italy", "Mexico", "Norway", "Egypt", "India",
                "Australia", "Germany", "Spain", "Peru", "Vietnam", "Ireland", "Chile", "Greece", "Turkey", "Poland"],
    "city": ["Paris", "Tokyo", "London", "Chicago", "Berlin", "Madrid", "Toronto", "Sydney", "Boston", "Seattle",
             "Rome", "Dublin", "Denver", "Lisbon", "Cairo", "Mumbai", "Austin", "Vienna", "Oslo", "Miami"],
    "room": ["living room", "kitchen", "bedroom", "bathroom", "garage", "office", "hallway", "dining room",
             "basement", "porch", "kids room", "guest room"],
    "device": ["lamp", "lights", "fan", "heater", "TV", "radio", "air conditioner", "speaker", "coffee maker",
               "dishwasher", "oven", "ceiling light"],
    "name": ["Anna", "Ben", "Carlos", "Diana", "Emma", "Frank", "Grace", "Hiro", "Isla", "Jack", "Kate", "Leo",
             "Maya", "Noah", "Olivia", "Priya", "Sam", "Tom", "Uma", "Zoe", "mom", "dad", "my sister", "the office"],
    "food": ["milk", "eggs", "bread", "apples", "coffee", "rice", "pasta", "cheese", "tomatoes", "chicken",
             "bananas", "butter", "onions", "yogurt", "orange juice", "carrots", "flour", "olive oil"],
    "animal": ["cats", "dogs", "penguins", "elephants", "owls", "dolphins", "horses", "bees", "frogs", "tigers",
               "parrots", "octopuses", "wolves", "rabbits", "sharks", "turtles"],
    "genre": ["jazz", "rock", "classical", "pop", "country", "hip hop", "blues", "reggae", "folk", "electronic",
              "relaxing", "upbeat", "piano", "eighties"],
    "task": ["bake bread", "change a tire", "tie a tie", "boil an egg", "learn to swim", "fall asleep faster",
             "save money", "write a cover letter", "plant tomatoes", "clean a cast iron pan", "make pancakes",
             "start running", "learn Spanish", "fix a leaky faucet", "remove a coffee stain", "train a puppy",
             "meditate", "make friends in a new city", "study for an exam", "prepare for a job interview"],
    "reminder": ["call the dentist", "buy a birthday present", "water the plants", "take my medicine",
                 "pay the rent", "pick up the kids", "send the report", "walk the dog", "book the flight",
                 "return the library books", "charge my phone", "check the mail"],
    "concept": ["gravity", "photosynthesis", "inflation", "black holes", "the internet", "vaccines", "rainbows",
                "electricity", "democracy", "climate change", "machine learning", "compound interest", "tides",
                "earthquakes", "the immune system", "evolution", "DNA", "blockchain", "jet lag", "thunder"],
    "thing": ["sky", "ocean", "sun", "moon", "grass", "snow", "sea water", "desert", "night sky", "fire"],
    "adjective": ["blue", "salty", "hot", "cold", "green", "bright", "dark", "loud", "quiet", "big"],
    "mood": ["tired", "happy", "stressed", "bored", "excited", "nervous", "great", "a bit sad", "sleepy",
             "hungry", "relaxed", "overwhelmed"],
    "place": ["the beach", "a long trip", "the gym", "the mountains", "my grandmother's house", "a concert",
              "the dentist", "a wedding", "the supermarket", "work", "a hike", "the park"],
    "hobby": ["reading", "cooking", "hiking", "painting", "chess", "gardening", "photography", "knitting",
              "cycling", "fishing", "yoga", "video games", "soccer", "baking", "dancing", "camping"],
    "category": ["color", "movie", "book", "food", "season", "animal", "song", "sport", "holiday", "dessert"],
    "meal": ["breakfast", "lunch", "dinner", "a snack", "a picnic", "a party", "a date night"],
    "language": ["Spanish", "French", "German", "Italian", "Japanese", "Portuguese", "Chinese", "Dutch"],
    "word": ["hello", "thank you", "good night", "friend", "water", "beautiful", "library", "happy birthday",
             "cheese", "see you tomorrow", "excuse me", "delicious"],
    "unit_pair": ["inches in a foot", "feet in a mile", "ounces in a pound", "days in a year", "seconds in an hour",
                  "grams in a kilogram", "centimeters in a meter", "cups in a gallon", "minutes in a day",
                  "weeks in a year", "hours in a week", "meters in a kilometer"],
    "when": ["today", "tomorrow", "tonight", "this weekend", "on Monday", "next week", "in the morning",
             "this afternoon", "on Friday", "later"],
    "person": ["Shakespeare", "Einstein", "Marie Curie", "Mozart", "Leonardo da Vinci", "Abraham Lincoln",
               "Isaac Newton", "Cleopatra", "Charles Darwin", "Frida Kahlo", "Nelson Mandela", "Ada Lovelace"],
    "onoff": ["on", "off"],
    "updown": ["up", "down"],
    "small_number": ["two", "three", "five", "ten", "fifteen", "twenty", "thirty", "forty five", "sixty", "ninety"],
    "temperature": ["sixty five", "sixty eight", "seventy", "seventy two", "twenty", "twenty one", "nineteen"],
    "number": ["seven", "twelve", "fifteen", "twenty three", "forty", "sixty four", "ninety nine", "one hundred",
               "two hundred fifty", "eight"],
    "operation": ["plus", "minus", "times", "divided by"],
}

_TEMPLATES: dict[str, list[str]] = {
    "question": [
        "What is the capital of {country}?", "How do I {task}?", "What's the best way to {task}?",
        "Why is the {thing} {adjective}?", "What's the weather like in {city} {when}?", "Will it rain {when}?",
        "How many {unit_pair}?", "Who was {person}?", "Can you explain {concept} to me?", "What is {concept}?",
        "How does {concept} work?", "What time is it in {city}?", "How far is {city} from {city2}?",
        "What should I cook for {meal}?", "What does {word} mean in {language}?",
        "What is {number} {operation} {number2}?",
        "Is it a good idea to {task} {when}?", "What do {animal} eat?", "How long do {animal} live?",
        "Where do {animal} live?", "What's a good name for a pet?", "What language do they speak in {country}?",
        "What's the population of {city}?", "What are some tips for {hobby}?", "Why do {animal} sleep so much?",
        "How do you say {word} in {language}?", "What's something fun to do in {city}?",
        "What should I pack for a trip to {country}?", "Is {food} healthy?", "How do I store {food}?",
        "What can I make with {food} and {food2}?", "When did {person} live?", "What is {person} famous for?",
    ],
    "command": [
        "Turn {onoff} the {room} {device}.", "Switch {onoff} the {device} in the {room}.",
        "Set a timer for {small_number} minutes.", "Remind me to {reminder} {when}.", "Play some {genre} music.",
        "Add {food} to my shopping list.", "Call {name}.", "Send a message to {name} saying I'm running late.",
        "Set the thermostat to {temperature} degrees.", "Tell me a joke about {animal}.", "Turn the volume {updown}.",
        "Translate {word} into {language}.", "Give me a fun fact about {animal}.",
        "Wake me up at {small_number} past seven.",
        "Dim the lights in the {room}.", "Lock the front door.", "Start the {device}.", "Read me the news.",
        "Tell me a short story about {animal}.", "Recommend a book about {concept}.", "Give me a recipe for {meal}.",
        "Cancel my alarm for {when}.", "Spell the word {word}.", "Describe {city} in one sentence.",
        "Summarize the history of {country} briefly.", "Suggest a hobby for me.", "Count to {small_number}.",
    ],
    "small_talk": [
        "Hi, how are you?", "Good morning!", "Good night.", "I'm feeling {mood} today.", "My name is {name}.",
        "I just got back from {place}.", "Do you like {hobby}?", "Thank you so much.",
        "What's your favorite {category}?",
        "I had a long day at work.", "I'm thinking about learning {language}.", "I love {animal}.",
        "What do you do for fun?", "Can you keep me company for a while?", "I can't decide what to have for {meal}.",
        "I'm going to {city} {when}.", "My friend {name} is visiting {when}.", "I've started {hobby} recently.",
        "Do you have any advice for someone who feels {mood}?", "Tell me something interesting.",
        "Who are you?", "What can you do?", "That's really cool.", "I don't understand.", "Are you a robot?",
    ],
}
_PREFIXES = {"question": ["Hey, ", "Okay, ", "So, ", "Um, ", "Quick question: ", "I was wondering, ", "Tell me, "],
             "command": ["Please ", "Hey, ", "Okay, ", "Could you ", "Can you ", "I want you to ", "Now "],
             "small_talk": ["Hey, ", "Well, ", "Um, ", "You know, ", "Oh, "]}
_SUFFIXES = {"question": [], "command": [" please", " right now", " for me", ", thanks"], "small_talk": []}
_DECORATED = 0.35  # share of utterances with a prefix (and, for commands, as often a suffix)
_FIELD = re.compile(r"\{(\w+?)(2?)\}")


def _fill(template: str, rng: random.Random) -> str:
    chosen: dict[str, str] = {}

    def pick(match: re.Match[str]) -> str:
        field, second = match.group(1), match.group(2)
        options = _WORDS[field]
        value = rng.choice(options)
        if second:  # {city2}: a different value than {city}
            while value == chosen.get(field) and len(options) > 1:
                value = rng.choice(options)
        chosen.setdefault(field, value)
        return value

    return _FIELD.sub(pick, template)


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0].rstrip(",.?!")
    keep = first == "I" or first.startswith("I'") or first in _WORDS["name"] or first in _WORDS["city"]
    return text if keep else text[0].lower() + text[1:]


def _decorate(text: str, kind: str, rng: random.Random) -> str:
    if rng.random() < _DECORATED:
        prefix = rng.choice(_PREFIXES[kind])
        text = prefix + _lower_first(text)
        if prefix in ("Could you ", "Can you ") and text.endswith("."):
            text = text[:-1] + "?"
    if _SUFFIXES[kind] and rng.random() < _DECORATED and text[-1] in ".?!":
        text = f"{text[:-1]}{rng.choice(_SUFFIXES[kind])}{text[-1]}"
    return text


_KINDS = list(_TEMPLATES)
_KIND_WEIGHTS = [0.45, 0.35, 0.2]


def generate_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` user utterances, distinct while the template space allows (then repeats)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    prompts: list[str] = []
    attempts = 0
    while len(prompts) < count:
        attempts += 1
        kind = rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0]
        text = _decorate(_fill(rng.choice(_TEMPLATES[kind]), rng), kind, rng)
        if text in seen and attempts < count * 20:
            continue
        seen.add(text)
        prompts.append(text)
    return prompts
