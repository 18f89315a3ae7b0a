"""Minimal pairs: near misses that differ from a taught question in one meaningful word.

A correction teaches a *specific* answer: "the Lisbon desk opens at 8 on weekdays". A
question that shares almost every word with the taught one but changes the one word the
answer depends on (another city, another weekday, "close" for "open", a different plan,
"can't" for "can") must not get that answer, however close it sits in embedding space.
Paraphrase data (CLINC150 and the like) has no such pairs, so neither training nor the
benchmarks ever saw them; this module makes them from any utterance:

- ``perturb(text, rng)``: near misses, each one edit of one word or phrase, tagged with its
  ``kind`` (``KINDS``): a weekday, month or time of day (``time``); a number, ordinal or
  spelled number (``number``); a product, platform, device, plan or level (``product``);
  a city, country, language or venue (``place``); a role or person (``role``); a verb or
  direction for its opposite or sibling (``opposite``); a negation added or removed
  (``negation``: "what can I bring" -> "what can't I bring", "I need" -> "I don't need"; never
  at the head of a yes/no question, which asks the same either way); a unit or currency
  (``unit``); a food, vehicle, colour, subject or other everyday thing (``thing``);
- ``light_edit(text, rng)``: the opposite, a meaning-preserving edit (punctuation, case,
  filler such as "please" or "can you tell me") for positives that must still get the answer.

The lexicons are general English (hundreds of entries), not tuned to any data set. Edits
keep the case of what they replace ("Monday" -> "Tuesday", "ios" -> "android"), match whole
words only (and multiword phrases before their words), carry plurals and possessives over
("saturdays" -> "sundays", "wife's" -> "son's") and fix "a"/"an" before a swapped word.
Everything random comes from the ``random.Random`` passed in, so outputs are seeded.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "FILLER_WORDS", "SWAP_KINDS", "Perturbation", "perturb", "perturbable", "light_edit",
           "sibling_swaps", "slot_phrases", "word_swaps", "near_copy"]

KINDS = ("time", "number", "product", "place", "role", "opposite", "negation", "unit", "thing")
"""The kinds of near miss ``perturb`` makes, in a fixed order."""


@dataclass(frozen=True, slots=True)
class Perturbation:
    """One near miss: ``text`` is ``original`` with ``changed[0]`` (at ``span``) replaced by ``changed[1]``."""

    text: str
    kind: str
    original: str
    changed: tuple[str, str]
    span: tuple[int, int]


# -- lexicons -----------------------------------------------------------------------------------
# Sibling groups: any member may replace any other of its group. (kind, plural forms too?, members).
# Canonical spelling carries proper-noun case; lower-case input gets lower-case replacements.

_SIBLINGS: tuple[tuple[str, bool, str], ...] = (
    # time
    ("time", True, "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday"),
    ("time", True, "weekday, weekend"),
    ("time", False, "January, February, March, April, May, June, July, August, September, October, November, "
                    "December"),
    ("time", True, "morning, afternoon, evening, night"),
    ("time", False, "noon, midnight"),
    ("time", False, "today, tonight, tomorrow, yesterday"),
    ("time", False, "spring, summer, autumn, winter, fall"),
    ("time", False, "daily, weekly, monthly, yearly, annually, quarterly, hourly, nightly, biweekly"),
    ("time", False, "annual, monthly, quarterly, weekly"),
    ("time", True, "minute, hour, day, week, month, year, decade"),
    ("time", True, "semester, term, quarter, trimester"),
    ("time", False, "Christmas, Easter, Thanksgiving, Halloween, Hanukkah, Ramadan, Diwali, New Year's Day, "
                    "Labor Day, Memorial Day, Independence Day"),
    ("time", False, "breakfast, brunch, lunch, dinner"),
    # number (digits are handled apart)
    ("number", False, "two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, fifteen, twenty, thirty, "
                      "forty, fifty, sixty, seventy, eighty, ninety"),
    ("number", True, "hundred, thousand, million, billion"),
    ("number", False, "first, second, third, fourth, fifth, sixth, seventh, eighth, ninth, tenth, eleventh, twelfth, "
                      "twentieth, hundredth"),
    ("number", False, "single, double, triple, quadruple"),
    ("number", False, "once, twice"),
    ("number", False, "half, quarter"),
    # product, platform, device, plan
    ("product", False, "iOS, Android, Windows, macOS, Linux, ChromeOS"),
    ("product", False, "Windows, Mac, Linux, PC, Chromebook, Ubuntu"),
    ("product", True, "iPhone, iPad, MacBook, iMac, Apple Watch, AirPods, Kindle, Pixel, Galaxy, Fire TV, Roku, "
                      "Chromecast"),
    ("product", False, "Samsung, Google, Microsoft, Amazon, Sony, Dell, HP, Lenovo, Asus, Acer, LG, Huawei, Xiaomi, "
                       "Nokia, Motorola, OnePlus, Apple"),
    ("product", True, "phone, tablet, laptop, desktop, computer, smartwatch, watch, tv, television, printer, router, "
                      "modem, monitor, keyboard, mouse, headset, webcam, speaker, camera, console, scanner, "
                      "projector, smart speaker, e-reader"),
    ("product", False, "Chrome, Firefox, Safari, Edge, Brave, Opera"),
    ("product", False, "Visa, Mastercard, Amex, American Express, Discover, PayPal, Venmo, Zelle, Apple Pay, "
                       "Google Pay, Stripe, Bitcoin"),
    ("product", True, "credit card, debit card, gift card, prepaid card, bank transfer, wire transfer, check, cheque, "
                      "money order"),
    ("product", False, "Slack, Discord, Teams, Zoom, Skype, WhatsApp, Telegram, Messenger, Signal, WeChat, "
                       "Google Meet, Webex"),
    ("product", False, "Facebook, Instagram, Twitter, TikTok, LinkedIn, Reddit, YouTube, Snapchat, Pinterest, "
                       "Twitch, Mastodon"),
    ("product", False, "Netflix, Hulu, Spotify, Disney Plus, HBO, Prime Video, Apple Music, Pandora, Peacock, "
                       "Paramount Plus"),
    ("product", False, "Excel, PowerPoint, Word, Outlook, Google Docs, Google Sheets, Google Slides, Gmail, "
                       "Dropbox, OneDrive, Google Drive, iCloud, Notion, Trello, Jira, Asana, Salesforce, GitHub, "
                       "GitLab, Figma"),
    ("product", False, "Python, Java, JavaScript, TypeScript, Ruby, Rust, PHP, Kotlin, Swift, Scala, Perl, "
                       "Haskell, SQL, HTML, CSS"),
    ("product", False, "Toyota, Honda, Ford, Chevrolet, Chevy, BMW, Audi, Mercedes, Tesla, Nissan, Hyundai, Kia, "
                       "Subaru, Volkswagen, Mazda, Jeep, Volvo, Lexus, Porsche"),
    ("product", False, "PlayStation, Xbox, Nintendo, Steam"),
    ("product", False, "basic, premium, pro, enterprise, standard, starter, deluxe, gold, silver, platinum, bronze"),
    ("product", False, "standard, express, overnight, priority, economy, same-day, next-day"),
    ("product", False, "economy class, business class, first class, premium economy"),
    ("product", False, "UPS, FedEx, DHL, USPS, Royal Mail"),
    ("product", False, "beginner, intermediate, advanced, expert"),
    ("product", False, "introductory, intermediate, advanced"),
    ("product", False, "small, medium, large, extra large"),
    ("product", True, "refund, exchange, store credit, replacement"),
    ("product", True, "subscription, membership, license, trial"),
    ("product", True, "app, website, browser extension, desktop app"),
    # place
    ("place", False, "Berlin, Paris, London, Madrid, Rome, Lisbon, Amsterdam, Brussels, Vienna, Prague, Warsaw, "
                     "Budapest, Dublin, Copenhagen, Stockholm, Oslo, Helsinki, Zurich, Geneva, Munich, Hamburg, "
                     "Frankfurt, Milan, Barcelona, Athens, Istanbul, Moscow, Kyiv, New York, Los Angeles, Chicago, "
                     "Boston, Seattle, San Francisco, Austin, Denver, Miami, Atlanta, Dallas, Houston, Phoenix, "
                     "Toronto, Vancouver, Montreal, Mexico City, Tokyo, Osaka, Seoul, Beijing, Shanghai, Hong Kong, "
                     "Singapore, Bangkok, Mumbai, Delhi, Bangalore, Dubai, Cairo, Lagos, Nairobi, Johannesburg, "
                     "Cape Town, Sydney, Melbourne, Auckland, Buenos Aires, Sao Paulo, Rio de Janeiro, Lima, Bogota, "
                     "Santiago"),
    ("place", False, "Germany, France, Spain, Italy, Portugal, the Netherlands, Belgium, Austria, Switzerland, "
                     "Poland, Sweden, Norway, Denmark, Finland, Ireland, Greece, Czechia, Hungary, Romania, Ukraine, "
                     "Russia, the UK, England, Scotland, Wales, the US, the USA, Canada, Mexico, Brazil, Argentina, "
                     "Chile, Colombia, Peru, Japan, China, Korea, South Korea, India, Pakistan, Bangladesh, "
                     "Indonesia, Vietnam, Thailand, the Philippines, Malaysia, Australia, New Zealand, Egypt, "
                     "Nigeria, Kenya, South Africa, Morocco, Israel, Saudi Arabia, Iran, Iceland, Turkey"),
    ("place", False, "Europe, Asia, Africa, North America, South America, Australia, Antarctica, Oceania"),
    ("place", False, "California, Texas, Florida, New York State, Illinois, Ohio, Michigan, Oregon, Colorado, "
                     "Arizona, Nevada, Massachusetts, Virginia, Pennsylvania, New Jersey, Minnesota, Wisconsin, "
                     "Tennessee, Utah, Alaska, Hawaii, Ontario, Quebec, Bavaria"),
    ("place", False, "English, Spanish, French, German, Italian, Portuguese, Dutch, Russian, Chinese, Mandarin, "
                     "Cantonese, Japanese, Korean, Arabic, Hindi, Bengali, Urdu, Turkish, Polish, Swedish, "
                     "Norwegian, Danish, Finnish, Greek, Hebrew, Thai, Vietnamese, Indonesian, Swahili, Ukrainian, "
                     "Czech, Hungarian, Romanian, Persian, Tagalog"),
    ("place", True, "office, warehouse, store, shop, branch, headquarters, factory, campus, library, gym, "
                    "cafeteria, canteen, lab, classroom, lecture hall, lobby, reception, parking lot, garage, "
                    "airport, train station, bus station, hotel, restaurant, cafe, hospital, clinic, pharmacy, "
                    "school, university, college, bank, post office, museum, park, mall, supermarket, "
                    "grocery store, bakery, stadium, theater, cinema, studio, workshop, showroom, depot, "
                    "data center, help desk, front desk, service desk"),
    ("place", True, "kitchen, bathroom, bedroom, living room, basement, attic, backyard, balcony, hallway, "
                    "conference room, meeting room, break room, mailroom, server room, waiting room"),
    ("place", False, "downtown, uptown, midtown, suburbs"),
    ("place", False, "upstairs, downstairs"),
    ("place", False, "indoors, outdoors"),
    # role / person
    ("role", True, "wife, husband, son, daughter, mom, dad, mother, father, brother, sister, grandma, grandpa, "
                   "grandmother, grandfather, aunt, uncle, cousin, niece, nephew, boyfriend, girlfriend, fiance, "
                   "baby, kid, child, parent, spouse, roommate, neighbor, friend"),
    ("role", True, "student, teacher, tutor, professor, instructor, lecturer, teaching assistant, principal, dean, "
                   "classmate, freshman, sophomore, junior, senior, undergraduate, graduate student, parent"),
    ("role", True, "manager, employee, supervisor, intern, contractor, freelancer, director, executive, team lead, "
                   "coworker, colleague, boss, staff member, volunteer, recruiter, receptionist, assistant, "
                   "new hire, trainee"),
    ("role", True, "CEO, CTO, CFO, COO, VP, president, chair, founder"),
    ("role", True, "accountant, engineer, developer, designer, analyst, consultant, lawyer, nurse, doctor, dentist, "
                   "pharmacist, therapist, driver, pilot, chef, cashier, waiter, mechanic, plumber, electrician, "
                   "technician, courier, cleaner, security guard, librarian"),
    ("role", True, "customer, client, vendor, supplier, seller, buyer, merchant, subscriber, member, guest, visitor, "
                   "owner, tenant, landlord, user, admin, administrator, moderator, reviewer, author, editor, "
                   "contributor, maintainer, sponsor, patient, passenger, player, coach, referee, fan, partner, "
                   "affiliate, reseller, sender, recipient"),
    ("role", True, "adult, child, teenager, senior citizen, toddler, infant, minor"),
    ("role", True, "man, woman, boy, girl"),
    ("role", True, "employer, employee"),
    # units and currencies
    ("unit", True, "mile, kilometer, meter, foot, inch, centimeter, yard, millimeter"),
    ("unit", True, "pound, kilogram, gram, ounce, ton, stone"),
    ("unit", True, "liter, gallon, cup, quart, pint, tablespoon, teaspoon, milliliter"),
    ("unit", False, "celsius, fahrenheit, kelvin"),
    ("unit", True, "dollar, euro, yen, peso, rupee, franc, yuan, pound, cent, krona"),
    ("unit", True, "megabyte, gigabyte, terabyte, kilobyte"),
    ("unit", False, "MB, GB, TB, KB"),
    ("unit", False, "mph, km/h, kph"),
    ("unit", True, "calorie, gram of protein, gram of fat, gram of sugar"),
    ("unit", False, "percent, per cent"),
    # everyday things
    ("thing", True, "burger, sandwich, taco, burrito, apple, banana, orange, egg, cookie, muffin, bagel, donut, "
                    "pancake, salad, steak, pizza, hot dog, waffle, croissant, potato, tomato, carrot, onion, "
                    "avocado, peach, pear, lemon, cupcake"),
    ("thing", False, "pasta, rice, sushi, chicken, beef, pork, fish, bread, cheese, soup, cereal, chocolate, "
                     "ice cream, tofu, salmon, tuna, shrimp, lamb, turkey, oatmeal, yogurt, popcorn"),
    ("thing", False, "coffee, tea, juice, milk, water, beer, wine, soda, lemonade, espresso, latte, cappuccino, "
                     "smoothie, hot chocolate, whiskey, vodka"),
    ("thing", True, "car, truck, bus, train, plane, bike, motorcycle, scooter, taxi, ferry, boat, van, subway, "
                    "tram"),
    ("thing", True, "dog, cat, bird, rabbit, hamster, horse, parrot, turtle, guinea pig, goldfish, snake, lizard"),
    ("thing", False, "red, blue, green, yellow, black, white, gray, grey, purple, pink, brown, orange, beige"),
    ("thing", True, "shirt, jacket, coat, hat, sweater, hoodie, dress, skirt, scarf, glove, sock, shoe, boot, "
                    "sandal, sneaker"),
    ("thing", False, "soccer, football, basketball, tennis, baseball, golf, hockey, volleyball, rugby, cricket, "
                     "badminton, swimming, cycling, running, yoga, chess"),
    ("thing", True, "piano, guitar, violin, drum, flute, cello, trumpet, saxophone, ukulele"),
    ("thing", False, "math, maths, physics, chemistry, biology, history, geography, literature, economics, algebra, "
                     "calculus, geometry, statistics, art, music, computer science, philosophy, psychology"),
    ("thing", True, "passport, driver's license, visa, ID card, birth certificate"),
    ("thing", True, "invoice, receipt, contract, form, report, certificate, transcript, statement"),
    ("thing", True, "laptop bag, backpack, suitcase, carry-on, umbrella, wallet, purse"),
    ("thing", True, "flight, train ticket, bus ticket, hotel room, rental car"),
    ("thing", True, "package, parcel, letter, envelope, box, pallet"),
)

# Opposites that inflect like verbs (base, -s, past, -ing, past participle), and their siblings.
_VERB_OPPOSITES: tuple[str, ...] = (
    "upgrade:downgrade", "open:close", "add:remove", "add:delete", "buy:sell", "buy:rent", "cancel:book",
    "cancel:reschedule", "cancel:renew", "cancel:confirm", "increase:decrease", "increase:reduce",
    "send:receive", "start:stop", "start:finish", "begin:end", "enable:disable", "turn on:turn off",
    "switch on:switch off", "log in:log out", "sign in:sign out", "check in:check out", "pick up:drop off",
    "speed up:slow down", "subscribe:unsubscribe", "import:export", "upload:download", "lock:unlock",
    "install:uninstall", "accept:reject", "accept:decline", "approve:reject", "approve:deny", "allow:block",
    "allow:ban", "join:leave", "arrive:depart", "arrive:leave", "enter:exit", "deposit:withdraw",
    "lend:borrow", "push:pull", "win:lose", "pass:fail", "charge:refund", "show:hide", "include:exclude",
    "activate:deactivate", "connect:disconnect", "block:unblock", "follow:unfollow", "mute:unmute",
    "pause:resume", "hire:fire", "promote:demote", "raise:lower", "expand:collapse", "attach:detach",
    "pack:unpack", "load:unload", "plug:unplug", "encrypt:decrypt", "zip:unzip", "pin:unpin",
    "archive:restore", "delete:restore", "create:delete", "freeze:unfreeze", "remember:forget", "love:hate",
    "agree:disagree", "spend:save", "spend:earn", "gain:lose", "rise:fall", "print:scan",
    "repair:replace", "read:write", "fly:drive", "drive:walk", "heat:cool", "fill:empty", "save:discard",
    "share:unshare", "publish:unpublish", "register:deregister", "verify:unverify", "hire:lay off",
    "lease:buy", "refund:exchange", "mark:unmark", "select:deselect", "merge:separate",
)

# Opposites that do not inflect (adjectives, adverbs, prepositions, nouns).
_WORD_OPPOSITES: tuple[str, ...] = (
    "before:after", "above:below", "inside:outside", "inbound:outbound", "incoming:outgoing", "north:south",
    "east:west", "northern:southern", "eastern:western", "northbound:southbound", "eastbound:westbound",
    "early:late", "earlier:later", "earliest:latest", "cheap:expensive", "cheaper:more expensive",
    "cheapest:most expensive", "high:low", "higher:lower", "highest:lowest", "max:min", "maximum:minimum",
    "more:less", "more:fewer", "most:least", "fast:slow", "faster:slower", "fastest:slowest", "big:small",
    "bigger:smaller", "biggest:smallest", "long:short", "longer:shorter", "longest:shortest", "hot:cold",
    "warm:cool", "warmer:cooler", "new:old", "newer:older", "newest:oldest", "public:private",
    "online:offline", "online:in person", "domestic:international", "local:international", "local:remote",
    "full time:part time", "full-time:part-time", "paid:unpaid", "paid:free", "mandatory:optional",
    "required:optional", "internal:external", "permanent:temporary", "positive:negative", "correct:incorrect",
    "valid:invalid", "legal:illegal", "available:unavailable", "possible:impossible", "allowed:banned",
    "with:without", "light:dark", "true:false", "open:closed", "heavy:light", "empty:full", "wet:dry",
    "safe:dangerous", "easy:hard", "easy:difficult", "easier:harder", "easiest:hardest", "good:bad",
    "better:worse", "best:worst", "top:bottom", "forward:backward", "ascending:descending",
    "arrival:departure", "arrivals:departures", "income:expenses", "credit:debit", "profit:loss",
    "deposit:withdrawal", "deposits:withdrawals", "entrance:exit", "purchase:return", "purchases:returns",
    "beginning:end", "start date:end date", "pros:cons", "refundable:non-refundable", "taxable:tax-free",
    "discount:surcharge", "upstream:downstream", "inbox:outbox", "login:logout", "in stock:out of stock",
    "in-network:out-of-network", "weekdays:weekends", "daytime:nighttime", "vegetarian:vegan",
    "sweet:savory", "spicy:mild", "wholesale:retail", "manual:automatic", "wired:wireless", "indoor:outdoor",
    "junior:senior", "opening:closing", "opening time:closing time",
    "first name:last name", "import tax:export tax", "increase:decrease", "upgrade:downgrade",
)

# Words that are also too often something else to be replaced (they may still be a replacement).
_NOT_SOURCE = frozenset({
    "may", "fall", "watch", "edge", "opera", "discover", "check", "teams", "signal", "word", "outlook", "swift",
    "polish", "turkey", "book", "booked", "books", "booking", "park", "train", "like", "stone", "term", "terms",
    "chair", "form", "statement", "box", "letter", "fan", "light", "running", "quarter", "leave", "left",
    "mark", "empty", "save", "fire", "read", "minor", "apple", "exchange", "pass", "passes", "sign", "cool",
    "drive", "walk", "hard", "with", "express",
})

_PLURAL_ONLY = frozenset({
    "headquarters", "headphones", "earbuds", "glasses", "pants", "jeans", "shorts", "news", "series", "species",
    "sheep", "fish", "yen", "yuan", "staff", "suburbs", "airpods", "goldfish", "aircraft", "salmon", "deer",
})
_IRREGULAR_PLURAL = {
    "child": "children", "person": "people", "man": "men", "woman": "women", "wife": "wives", "foot": "feet",
    "knife": "knives", "life": "lives", "half": "halves", "shelf": "shelves", "mouse": "mice", "tooth": "teeth",
    "goose": "geese", "alumnus": "alumni", "fiance": "fiances", "cactus": "cacti", "thief": "thieves",
    "leaf": "leaves", "loaf": "loaves", "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes",
    "echo": "echoes", "bus": "buses", "campus": "campuses", "status": "statuses", "tv": "tvs", "ID card": "ID cards",
}
_IRREGULAR_VERBS = {  # base: (-s, past, -ing, past participle)
    "buy": ("buys", "bought", "buying", "bought"), "sell": ("sells", "sold", "selling", "sold"),
    "send": ("sends", "sent", "sending", "sent"), "lend": ("lends", "lent", "lending", "lent"),
    "win": ("wins", "won", "winning", "won"), "lose": ("loses", "lost", "losing", "lost"),
    "begin": ("begins", "began", "beginning", "begun"), "leave": ("leaves", "left", "leaving", "left"),
    "teach": ("teaches", "taught", "teaching", "taught"), "spend": ("spends", "spent", "spending", "spent"),
    "hide": ("hides", "hid", "hiding", "hidden"), "show": ("shows", "showed", "showing", "shown"),
    "withdraw": ("withdraws", "withdrew", "withdrawing", "withdrawn"),
    "forget": ("forgets", "forgot", "forgetting", "forgotten"), "rise": ("rises", "rose", "rising", "risen"),
    "fall": ("falls", "fell", "falling", "fallen"), "freeze": ("freezes", "froze", "freezing", "frozen"),
    "unfreeze": ("unfreezes", "unfroze", "unfreezing", "unfrozen"), "read": ("reads", "read", "reading", "read"),
    "write": ("writes", "wrote", "writing", "written"), "fly": ("flies", "flew", "flying", "flown"),
    "drive": ("drives", "drove", "driving", "driven"), "stop": ("stops", "stopped", "stopping", "stopped"),
    "log": ("logs", "logged", "logging", "logged"), "plug": ("plugs", "plugged", "plugging", "plugged"),
    "unplug": ("unplugs", "unplugged", "unplugging", "unplugged"), "zip": ("zips", "zipped", "zipping", "zipped"),
    "unzip": ("unzips", "unzipped", "unzipping", "unzipped"), "pin": ("pins", "pinned", "pinning", "pinned"),
    "unpin": ("unpins", "unpinned", "unpinning", "unpinned"), "cancel": ("cancels", "cancelled", "cancelling",
                                                                         "cancelled"),
    "lay": ("lays", "laid", "laying", "laid"), "pick": ("picks", "picked", "picking", "picked"),
    "drop": ("drops", "dropped", "dropping", "dropped"), "slow": ("slows", "slowed", "slowing", "slowed"),
    "speed": ("speeds", "sped", "speeding", "sped"), "shut": ("shuts", "shut", "shutting", "shut"),
}
_EXTRA_FORMS = {"cancelled": "canceled", "cancelling": "canceling"}  # spelling variants also replaced

# "next meeting" / "last meeting" / "this meeting": one time phrase for another.
_RELATIVE = ("next", "last", "this", "previous")
_RELATIVE_TO = ("week, month, year, weekend, semester, term, quarter, night, morning, evening, time, meeting, class, "
                "lesson, session, payday, pay period, holiday, shift, appointment, flight, train, bus, release, "
                "deadline, election, game, episode, season, Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, "
                "Sunday, January, February, March, April, May, June, July, August, September, October, November, "
                "December, summer, winter, spring, autumn, fall")

# Words that are a verb in one place and a noun or adjective in another: (targets as a verb, as a
# noun/adjective, which to assume without a cue, look back for "is"/"does" beyond the previous word?).
_CONTEXT: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, bool]] = {
    "open": (("close",), ("closed",), "noun", True),
    "end": (("begin", "start"), ("beginning", "start"), "noun", True),
    "start": (("stop", "finish"), ("end",), "verb", False),
    "lower": (("raise",), ("higher",), "verb", False),
    "deposit": (("withdraw",), ("withdrawal",), "noun", False),
    "deposits": (("withdraws",), ("withdrawals",), "noun", False),
    "used": ((), ("new",), "verb", False),          # "a used car", not "I've used"
    "paid": ((), ("unpaid", "free"), "verb", False),  # "a paid plan", "to be paid", not "I was last paid"
}

# Words of two senses, told apart by the words around them: (cues, the kind with a cue, the kind without).
_PAYMENT_CUES = frozenset({"pay", "paying", "paid", "payment", "payments", "card", "cards", "credit", "debit",
                           "checkout", "charge", "charged", "accept", "accepted", "purchase", "buy", "billing"})
_SENSES: dict[str, tuple[frozenset[str], str, str]] = {
    "visa": (_PAYMENT_CUES, "product", "thing"),  # "pay with visa" vs "a visa for Japan"
    "visas": (_PAYMENT_CUES, "product", "thing"),
}

# Phrases whose words are not to be swapped one by one ("how long", not "how short").
_BLOCKED = frozenset({
    "how long", "how much", "how many", "how often", "how old", "no longer", "as long as", "at least", "at most",
    "more or less", "good morning", "good night", "good afternoon", "good evening", "good luck", "so long",
    "all the best", "factory settings", "factory reset", "factory default", "factory defaults", "first of all",
    "at first", "at last", "right now", "the other day", "one day", "some day", "any day",
    "all day", "day off", "days off", "time off", "free time", "spare time", "for free",
})
_BE = frozenset({"is", "are", "was", "were", "be", "been", "being", "isn't", "aren't", "wasn't", "weren't", "it's",
                 "that's", "stay", "stays", "remain", "remains", "get", "gets", "isnt", "arent", "im", "i'm",
                 "you're", "we're", "they're"})
_VERB_CUE = frozenset({"do", "does", "did", "don't", "doesn't", "didn't", "dont", "doesnt", "didnt", "to", "will",
                       "won't", "can", "can't", "cant", "cannot", "could", "would", "should", "must", "please",
                       "i", "you", "we", "they", "u", "let's", "lets", "not", "and", "or", "never", "always"})
_NOUN_CUE = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "no",
                       "any", "each", "every", "of", "direct", "security", "much"})

# Negation: auxiliaries and their negative forms.
_AUX_NEGATIVE = {
    "is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "do": "don't", "does": "doesn't",
    "did": "didn't", "can": "can't", "could": "couldn't", "will": "won't", "would": "wouldn't",
    "should": "shouldn't", "must": "mustn't",
}
_NEGATIVE_AUX = {neg: aux for aux, neg in _AUX_NEGATIVE.items()} | {
    "cannot": "can", "haven't": "have", "hasn't": "has", "hadn't": "had", "ain't": "is",
    "isnt": "is", "arent": "are", "wasnt": "was", "werent": "were", "dont": "do", "doesnt": "does",
    "didnt": "did", "cant": "can", "couldnt": "could", "wouldnt": "would", "shouldnt": "should",
    "havent": "have", "hasnt": "has",
}
_PRONOUNS = frozenset({"i", "you", "we", "they", "he", "she", "it", "u"})
_THIRD_PERSON = frozenset({"he", "she", "it"})
_CONTENT_VERBS = {"need": "needs", "want": "wants", "have": "has", "own": "owns", "use": "uses", "know": "knows",
                  "qualify": "qualifies", "owe": "owes", "accept": "accepts", "allow": "allows"}
_BE_CONTRACTIONS = frozenset({"i'm", "you're", "we're", "they're", "it's", "he's", "she's", "that's", "there's",
                              "im", "youre", "theyre"})
_NOUN_BEFORE = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that"})

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*(?:/[^\W_]+)?")  # words, letters of any script
_POSSESSIVE = re.compile(r"^(.*?)(['’]s)$", re.IGNORECASE)


def _plural(phrase: str) -> str | None:
    """The plural of a noun phrase (its last word), or None when it has none."""
    if phrase.lower() in _PLURAL_ONLY or phrase in _IRREGULAR_PLURAL:
        return _IRREGULAR_PLURAL.get(phrase)
    head, _, last = phrase.rpartition(" ")
    low = last.lower()
    if low in _PLURAL_ONLY:
        return None
    if low in _IRREGULAR_PLURAL:
        plural = _IRREGULAR_PLURAL[low] if last == low else last[0] + _IRREGULAR_PLURAL[low][1:]
    elif re.search(r"(s|x|z|ch|sh)$", low):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", low):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def _verb_forms(base: str) -> tuple[str, str, str, str, str]:
    """(base, -s, past, -ing, past participle) of a verb or phrasal verb ("turn on": the first word inflects)."""
    head, sep, particle = base.partition(" ")
    tail = sep + particle
    if head in _IRREGULAR_VERBS:
        s, past, ing, pp = _IRREGULAR_VERBS[head]
    else:
        if re.search(r"(s|x|z|ch|sh|o)$", head):
            s = head + "es"
        elif re.search(r"[^aeiou]y$", head):
            s = head[:-1] + "ies"
        else:
            s = head + "s"
        if head.endswith("e"):
            past = head + "d"
        elif re.search(r"[^aeiou]y$", head):
            past = head[:-1] + "ied"
        else:
            past = head + "ed"
        if head.endswith("ie"):
            ing = head[:-2] + "ying"
        elif head.endswith("e") and not head.endswith(("ee", "ye", "oe")):
            ing = head[:-1] + "ing"
        else:
            ing = head + "ing"
        pp = past
    return base, s + tail, past + tail, ing + tail, pp + tail


# Built once: lower-case source phrase -> [(replacement in canonical case, kind), ...], and its canonical case.
_INDEX: dict[str, list[tuple[str, str]]] = {}
_CANONICAL: dict[str, str] = {}


def _add(source: str, target: str, kind: str) -> None:
    if source.lower() == target.lower():
        return
    _CANONICAL.setdefault(source.lower(), source)
    options = _INDEX.setdefault(source.lower(), [])
    if not any(t.lower() == target.lower() for t, _ in options):
        options.append((target, kind))


def _build_index() -> None:
    for kind, plural, members in _SIBLINGS:
        words = [m.strip() for m in members.split(",")]
        for a in words:
            for b in words:
                _add(a, b, kind)
                if plural:
                    pa, pb = _plural(a), _plural(b)
                    if pa and pb and pa.lower() != a.lower():
                        _add(pa, pb, kind)
    for pair in _VERB_OPPOSITES:
        a, b = pair.split(":")
        mapped: dict[str, str] = {}
        for fa, fb in zip(_verb_forms(a), _verb_forms(b), strict=True):
            mapped.setdefault(fa, fb)
            mapped.setdefault(fb, fa)
        for source, target in mapped.items():
            _add(source, target, "opposite")
            for variant, spelling in _EXTRA_FORMS.items():
                if variant in source:
                    _add(source.replace(variant, spelling), target, "opposite")
    for pair in _WORD_OPPOSITES:
        a, b = pair.split(":")
        _add(a, b, "opposite")
        _add(b, a, "opposite")
    _add("used", "new", "opposite")  # one way: "a used car" -> "a new car", but not "a new job" -> "a used job"
    _add("never", "always", "negation")
    _add("always", "never", "negation")
    for noun in (n.strip() for n in _RELATIVE_TO.split(",")):
        for a in _RELATIVE:
            for b in _RELATIVE:
                if b != "this" and {a, b} != {"previous", "last"}:  # "my this meeting" reads wrong
                    _add(f"{a} {noun}", f"{b} {noun}", "time")


_build_index()
_MAX_WORDS = max(len(_WORD.findall(key)) for key in _INDEX)


# -- finding edits ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edit:
    start: int
    end: int
    new: str


@dataclass(frozen=True, slots=True)
class _Site:
    kind: str
    edits: tuple[_Edit, ...]


def _match_case(original: str, replacement: str) -> str:
    """``replacement`` (in its canonical case) written the way ``original`` was: in the lexicon's own case
    when ``original`` was ("iPhone" -> "iPad", "UPS" -> "FedEx"), else lower, UPPER or Capitalised like it."""
    letters = [c for c in original if c.isalpha()]
    if not letters or _CANONICAL.get(original.lower()) == original:
        return replacement
    if all(c.islower() for c in letters):
        return replacement.lower()
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if original[0].isupper():
        if any(c.isupper() for c in replacement):
            return replacement
        return replacement[0].upper() + replacement[1:]
    return replacement


def _article_for(word: str) -> str:
    """"a" or "an" before ``word`` (by its sound, roughly)."""
    low = word.lower()
    if re.match(r"(hour|honest|hono|heir)", low):
        return "an"
    if re.match(r"(uni|use|usu|usa|uk\b|eu|one\b|once)", low):
        return "a"
    if len(word) > 1 and word[:2].isupper() and word[0] in "AEFHILMNORSX":
        return "an"  # initialisms read letter by letter: an FBI agent, an MBA, an SMS
    return "an" if low[:1] in ("a", "e", "i", "o", "u") else "a"


def _edit(text: str, start: int, end: int, new: str) -> _Edit:
    """Replace text[start:end] by ``new``, with the article before it fixed ("a refund" -> "an exchange")."""
    before = re.search(r"(?<![A-Za-z])(a|an|A|An|AN)(\s+)$", text[:start])
    if before:
        article = _article_for(new)
        old = before.group(1)
        if old.lower() != article:
            shouting = old.isupper() and (len(old) > 1 or (text[start:end].isupper() and len(text[start:end]) > 1))
            fixed = article if old.islower() else article.upper() if shouting else article.capitalize()
            return _Edit(before.start(1), end, fixed + before.group(2) + new)
    return _Edit(start, end, new)


def _part_of_speech(word: str, before: list[str]) -> str:
    """"verb" or "noun" (noun or adjective) for one of ``_CONTEXT``'s words, from the words ``before`` it."""
    _, _, default, look_back = _CONTEXT[word]
    prev = before[-1].replace("’", "'") if before else ""
    if prev in _VERB_CUE:
        return "verb"
    if prev in _NOUN_CUE or prev in _BE:
        return "noun"
    if look_back:
        for token in reversed(before[-6:]):
            token = token.replace("’", "'")
            if token in _BE:
                return "noun"
            if token in _VERB_CUE:
                return "verb"
    return default


def _lexicon_matches(text: str) -> Iterator[tuple[int, str, list[tuple[str, str]]]]:
    """Each lexicon phrase ``text`` names, longest first and left to right: (its start, its text without
    a possessive "'s", its siblings and opposites as (target in canonical case, kind)), the senses that
    the words around it rule out already dropped."""
    tokens = list(_WORD.finditer(text))
    covered = -1
    for i in range(len(tokens)):
        if tokens[i].start() < covered:
            continue
        for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):
            span = tokens[i:i + n]
            if any(text[a.end():b.start()] not in (" ", "-") and not text[a.end():b.start()].isspace()
                   for a, b in itertools.pairwise(span)):
                continue
            start, end = span[0].start(), span[-1].end()
            raw = text[start:end]
            suffix = ""
            possessive = _POSSESSIVE.match(raw)
            if possessive and possessive.group(1).lower() not in ("it", "that", "there", "what", "who", "let",
                                                                  "he", "she", "here", "where", "how"):
                raw, suffix = possessive.group(1), possessive.group(2)
            key = re.sub(r"\s+", " ", raw.lower())
            if key in _BLOCKED:
                covered = end
                break
            options = _INDEX.get(key) or _INDEX.get(key.replace("-", " "))
            if not options or (key in _NOT_SOURCE and not _proper_noun(text, start, raw, options)):
                continue
            if key in _CONTEXT:
                verb, noun, _, _ = _CONTEXT[key]
                wanted = verb if _part_of_speech(key, [t.group(0).lower() for t in tokens[:i]]) == "verb" else noun
                options = [(t, k) for t, k in options if k != "opposite" or t.lower() in wanted]
                if not options:
                    continue
            if key in _SENSES:
                cues, with_cue, without = _SENSES[key]
                sense = with_cue if any(t.group(0).lower() in cues for t in tokens) else without
                options = [(t, k) for t, k in options if k == sense]
            yield start, raw, options
            if suffix or n > 1:
                covered = end
            break


def _proper_noun(text: str, start: int, raw: str, options: list[tuple[str, str]]) -> bool:
    """Is a word too often something else (``_NOT_SOURCE``) the name here: capitalised mid-sentence
    ("pay with Discover", "message me on Signal") where its lexicon group is one of names?"""
    mid_sentence = bool(text[:start].strip()) and text[:start].rstrip()[-1] not in ".!?:;\"'“"
    return mid_sentence and raw[:1].isupper() and any(target[:1].isupper() for target, _ in options)


# The open classes a served answer is checked in (``sibling_swaps``): time and number are the slot
# check's (slots.py); a unit is a way of asking ("how many miles" / "kilometers"), not another thing;
# and an opposite too often stands in another role ("could I get refunded for this purchase" against
# "can I return this and be refunded": "purchase" / "return"), so opposites stay the verifier's.
SWAP_KINDS = ("product", "place", "role", "thing")

# Members of one sibling group that name the same thing, or one the other often stands for: swapping
# them is a paraphrase ("the shop" / "the store"), never a near miss, when serving.
_SAME_THING: tuple[frozenset[str], ...] = tuple(frozenset(w.strip() for w in group.split(",")) for group in (
    "store, shop, supermarket, grocery store", "cafeteria, canteen", "cinema, theater", "university, college",
    "office, headquarters", "help desk, front desk, service desk, reception", "depot, warehouse",
    "mom, mother", "dad, father", "grandma, grandmother", "grandpa, grandfather", "kid, child, baby",
    "parent, mom, dad, mother, father", "spouse, wife, husband, partner", "tv, television",
    "computer, laptop, desktop, pc", "chevrolet, chevy", "amex, american express", "check, cheque",
    "autumn, fall", "gray, grey", "math, maths", "coworker, colleague, staff member, employee",
    "boss, manager, supervisor", "admin, administrator", "customer, client, buyer", "package, parcel, box",
    "professor, lecturer, instructor, teacher", "car, rental car", "flight, plane", "mac, macos", "the us, the usa",
    "the uk, england", "app, desktop app", "windows, pc", "chinese, mandarin", "korea, south korea",
    "guest, visitor", "user, member, subscriber", "owner, admin",
))


def _same_thing(a: str, b: str) -> bool:
    return any(_forms(a) & group and _forms(b) & group for group in _SAME_THING)


def _forms(phrase: str) -> set[str]:
    """``phrase`` and, for a plural, its likely singulars ("guests" -> "guest", "boxes" -> "box")."""
    forms = {phrase}
    if phrase.endswith("s"):
        forms.add(phrase[:-1])
    if phrase.endswith("es"):
        forms.add(phrase[:-2])
    if phrase.endswith("ies"):
        forms.add(phrase[:-3] + "y")
    return forms


def _named(text: str) -> dict[str, set[str]]:
    """The lexicon phrases of ``SWAP_KINDS`` that ``text`` names (lower case), each with its siblings."""
    named: dict[str, set[str]] = {}
    for _, raw, options in _lexicon_matches(text):
        siblings = {target.lower() for target, kind in options if kind in SWAP_KINDS}
        if siblings:
            named.setdefault(re.sub(r"\s+", " ", raw.lower()), set()).update(siblings)
    return named


def sibling_swaps(asked: str, questions: Iterable[str], answer: str = "") -> tuple[str, ...]:
    """Open classes (``SWAP_KINDS``) in which ``asked`` names a product, place, role or thing where one
    of an answer's taught ``questions`` names a sibling of it instead ("Android" where it was taught
    for "iOS", "teachers" for "students", "Mexico" for "Canada"), and neither
    the questions nor the ``answer`` name it too. The lexicons' own siblings decide, so it never fires
    on a word they do not list; synonyms within a group ("shop" / "store") do not count."""
    mine = _named(asked)
    if not mine:
        return ()
    taught = [q.lower() for q in questions]
    seen = " ".join([*taught, answer.lower()])
    theirs: dict[str, set[str]] = {}
    for question in taught:
        theirs |= _named(question)
    kinds: set[str] = set()
    for phrase, siblings in mine.items():
        if _mentions(seen, phrase):
            continue
        for other in theirs:
            if other in siblings and not _mentions(asked.lower(), other) and not _same_thing(phrase, other):
                kinds.update(kind for target, kind in _INDEX.get(phrase, []) if target.lower() == other)
    return tuple(sorted(kinds & set(SWAP_KINDS)))


def _mentions(text: str, phrase: str) -> bool:
    """``phrase`` (or its plural, or its singular) as whole words of ``text`` (lower case)."""
    forms = _forms(phrase) | {_plural(phrase) or phrase}
    return any(re.search(rf"(?<![\w]){re.escape(f.lower())}(?![\w])", text) for f in forms)


def _word_sites(text: str) -> list[_Site]:
    sites: list[_Site] = []
    for start, raw, options in _lexicon_matches(text):
        by_kind: dict[str, list[_Edit]] = {}
        for target, kind in options:
            new = _match_case(raw, target)
            if "-" in raw and " " in new and len(new.split()) == len(raw.split("-")):
                new = new.replace(" ", "-")
            by_kind.setdefault(kind, []).append(_edit(text, start, start + len(raw), new))
        for kind, edits in by_kind.items():
            sites.append(_Site(kind, tuple(edits)))
    return sites


def _other_number(digits: str, before: str, after: str, rng: random.Random) -> str:
    """Another plausible number in the same place: hours stay hours, minutes minutes, years years."""
    n = int(digits)
    if after.startswith(":") and n <= 24:
        pool = [h for h in range(1, 13 if n <= 12 else 24) if h != n]
    elif before.endswith(":") and len(digits) == 2:
        pool = [m for m in (0, 15, 30, 45) if m != n]
        return f"{rng.choice(pool):02d}"
    elif 1900 <= n <= 2100 and len(digits) == 4:
        pool = [n + d for d in (-3, -2, -1, 1, 2, 3)]
    elif n <= 12:
        pool = [k for k in range(1, 13) if k != n]
    elif n % 10 == 0:
        zeros = len(digits) - len(digits.rstrip("0"))
        unit = 10 ** zeros
        lead = n // unit
        pool = [k * unit for k in range(1, max(10, 2 * lead)) if k != lead]
    else:
        spread = max(3, n // 3)
        pool = [n + d for d in range(-spread, spread + 1) if d and n + d > 0]
    new = rng.choice(pool)
    text = str(new)
    if digits.startswith("0") and len(text) < len(digits):
        text = text.zfill(len(digits))
    return text


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _number_sites(text: str, rng: random.Random) -> list[_Site]:
    sites: list[_Site] = []
    for m in re.finditer(r"(?<![\w.,])(?<![A-Za-z]-)(\d+)(?!\d)", text):
        digits = m.group(1)
        after = text[m.end():]
        if re.match(r"[.,]\d", after):
            continue  # decimals and thousands separators: left alone
        letters = re.match(r"[A-Za-z]+", after)
        ordinal = None
        if letters:
            suffix = letters.group(0)
            if suffix.lower() in ("st", "nd", "rd", "th"):
                ordinal = suffix
            elif suffix.lower() not in ("am", "pm", "s", "h", "min", "mins", "hr", "hrs", "x", "gb", "mb",
                                        "tb", "kg", "km", "cm", "mm", "lb", "lbs", "oz", "ml", "mph"):
                continue  # a name such as 401k or a4
        edits = []
        for _ in range(3):
            new = _other_number(digits, text[:m.start()], after, rng)
            if ordinal is not None:
                new_suffix = _ordinal_suffix(int(new))
                new += new_suffix.upper() if ordinal.isupper() else new_suffix
                edits.append(_edit(text, m.start(), m.end() + len(ordinal), new))
            else:
                edits.append(_edit(text, m.start(), m.end(), new))
        sites.append(_Site("number", tuple(dict.fromkeys(edits))))
    for m in re.finditer(r"(?<=\d)(\s?)(am|pm|a\.m\.|p\.m\.)(?![A-Za-z])", text, re.IGNORECASE):
        old = m.group(2)
        swapped = {"am": "pm", "pm": "am", "a.m.": "p.m.", "p.m.": "a.m."}[old.lower()]
        sites.append(_Site("time", (_Edit(m.start(2), m.end(2), _match_case(old, swapped)),)))
    return sites


def _negative_of(token: str, aux: str) -> str:
    return _match_case(token, _AUX_NEGATIVE[aux].replace("'", "’") if "’" in token else _AUX_NEGATIVE[aux])


def _negation_sites(text: str) -> list[_Site]:
    tokens = list(_WORD.finditer(text))
    low = [t.group(0).lower().replace("’", "'") for t in tokens]
    sites: list[_Site] = []
    negated_aux = False
    polar = bool(low) and (low[0] in _AUX_NEGATIVE or low[0] in _NEGATIVE_AUX)
    for i, (tok, word) in enumerate(zip(tokens, low, strict=True)):
        prev = low[i - 1] if i else ""
        nxt = low[i + 1] if i + 1 < len(low) else ""
        # A polar question asks the same negated or not ("Isn't the desk open on Sundays?" wants the
        # answer to "Is the desk open on Sundays?"): its leading auxiliary is left alone.
        if i == 0 and (word in _NEGATIVE_AUX or word in _AUX_NEGATIVE or word == "am"):
            negated_aux = True
            continue
        # un-negate: "can't" -> "can", "is not" -> "is", "you not" -> "you"
        if word in _NEGATIVE_AUX:
            new = _match_case(tok.group(0), _NEGATIVE_AUX[word])
            sites.append(_Site("negation", (_Edit(tok.start(), tok.end(), new),)))
            continue
        after_aux = prev in _AUX_NEGATIVE or prev in _PRONOUNS or prev in _BE_CONTRACTIONS or prev in ("am", "has")
        if word == "not" and i and not (polar and i <= 2) and after_aux:
            start = tokens[i - 1].end()
            sites.append(_Site("negation", (_Edit(start, tok.end(), ""),)))
            continue
        if negated_aux or not nxt or nxt in ("not", "n't"):
            continue
        # negate the first auxiliary: "what can i" -> "what can't i", "the desk is" -> "the desk isn't";
        # not "how don't i", "what isn't my salary", "when doesn't my job": nothing new is asked, and only
        # the first auxiliary ("how much pto do i have": not "do i don't have")
        if word in _AUX_NEGATIVE and prev not in ("to", "not", *_NOUN_BEFORE, *_NEGATIVE_AUX):
            negated_aux = True
            wh_question = low[0] in _QUESTION_START
            if low[0] != "how" and not (wh_question and (nxt not in _PRONOUNS or (
                    word in ("is", "are", "was", "were") and i <= 2))):
                sites.append(_Site("negation", (_Edit(tok.start(), tok.end(), _negative_of(tok.group(0), word)),)))
        elif word == "am" or word in _BE_CONTRACTIONS:
            sites.append(_Site("negation", (_Edit(tok.end(), tok.end(), " not"),)))
            negated_aux = True
        elif prev in _PRONOUNS and (word in _CONTENT_VERBS or word in _CONTENT_VERBS.values()):
            third = prev in _THIRD_PERSON or word in _CONTENT_VERBS.values()
            base = next((b for b, s in _CONTENT_VERBS.items() if s == word), word)
            helper = _match_case(tok.group(0), "doesn't" if third else "don't")
            sites.append(_Site("negation", (_Edit(tok.start(), tok.end(), f"{helper} {_match_case(word, base)}"),)))
            negated_aux = True
    return sites


def _sites(text: str, rng: random.Random) -> list[_Site]:
    return _word_sites(text) + _number_sites(text, rng) + _negation_sites(text)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _apply(text: str, edit: _Edit) -> str:
    return text[:edit.start] + edit.new + text[edit.end:]


# -- the public functions -----------------------------------------------------------------------


def perturb(text: str, rng: random.Random, limit: int = 3, kinds: Collection[str] | None = None
            ) -> list[Perturbation]:
    """Near misses of ``text``: each one edit of one word or phrase that would make an answer
    taught for ``text`` wrong (see ``KINDS``).

    At most ``limit`` (every edit found when ``limit <= 0``), with distinct texts none of which
    equals ``text`` up to case and spacing. Kinds take turns, in an ``rng`` order with negation
    last (a negated question is often the weakest near miss), and each changes a different
    word before any word is changed a second way ("Saturdays" -> "Sundays", then "Fridays").
    ``kinds`` keeps only those kinds. Empty when nothing in ``text`` can be changed.
    """
    queues: dict[str, list[list[_Edit]]] = {}
    for site in _sites(text, rng):
        if kinds is None or site.kind in kinds:
            edits = list(site.edits)
            rng.shuffle(edits)
            queues.setdefault(site.kind, []).append(edits)
    order = [k for k in KINDS if k in queues and k != "negation"]
    rng.shuffle(order)
    if "negation" in queues:
        order.append("negation")
    for k in order:
        rng.shuffle(queues[k])
    seen = {_norm(text)}
    out: list[Perturbation] = []
    while any(queues[k] for k in order):
        for k in order:
            queue = queues[k]
            while queue:  # this kind's next word, with an edit not tried yet
                edits = queue.pop(0)
                edit = edits.pop()
                if edits:
                    queue.append(edits)  # its other edits wait until every word had a turn
                new_text = _apply(text, edit)
                if _norm(new_text) in seen or not new_text.strip():
                    continue
                seen.add(_norm(new_text))
                out.append(Perturbation(new_text, k, text, (text[edit.start:edit.end], edit.new),
                                        (edit.start, edit.end)))
                break
            if 0 < limit <= len(out):
                return out
    return out


def word_swaps(text: str, table: Mapping[str, Sequence[str]], rng: random.Random, kind: str, limit: int = 1
               ) -> list[Perturbation]:
    """Edits of ``text`` that each replace one word that ``table`` lists (lower case -> words in their own
    case) by one of its entries, tagged ``kind``: with a table of siblings they are near misses, with
    one of synonyms paraphrases. Plurals carry over ("cars" -> "trucks"), case follows the word
    replaced and "a"/"an" before it is fixed. Filler words are never replaced. At most ``limit``, each a
    different word, in an ``rng`` order."""
    sites: list[tuple[int, int, str, Sequence[str], bool]] = []
    lowered = text.lower()
    fixed = [(m.start(), m.end()) for phrase in _BLOCKED   # "time off", "how long": idioms, not their words
             for m in re.finditer(rf"(?<![\w]){re.escape(phrase)}(?![\w])", lowered)]
    for m in _WORD.finditer(text):
        word = m.group(0)
        low = word.lower()
        if len(low) < 3 or low in FILLER_WORDS or any(a < m.end() and m.start() < b for a, b in fixed):
            continue
        if low in table:
            sites.append((m.start(), m.end(), word, table[low], False))
            continue
        singular = next((f for f in sorted(_forms(low) - {low}, key=len, reverse=True)
                         if f in table and _plural(f) == low), None)
        if singular is not None:
            sites.append((m.start(), m.end(), word, table[singular], True))
    rng.shuffle(sites)
    out: list[Perturbation] = []
    for start, end, word, options, plural in sites:
        choices = [o for o in options if o.lower() != word.lower()]
        if not choices:
            continue
        new = rng.choice(choices)
        if plural and not new.lower().endswith("s"):  # a replacement such as "years" is plural already
            new = _plural(new) or new
        edit = _edit(text, start, end, new.lower() if word.islower() else _match_case(word, new))
        out.append(Perturbation(_apply(text, edit), kind, text, (word, edit.new), (edit.start, edit.end)))
        if len(out) >= limit:
            break
    return out


def near_copy(a: str, b: str, most: int = 2) -> bool:
    """Is ``a`` ``b`` with a word or two changed, added or dropped (at most ``most`` on either side,
    filler words aside), the rest shared and at least twice as many words as the change: the shape of a
    near miss that ``perturb`` makes, not of a paraphrase in other words. False for the same words."""
    mine = Counter(w for w in _words(a) if w not in FILLER_WORDS)
    theirs = Counter(w for w in _words(b) if w not in FILLER_WORDS)
    only_mine, only_theirs = sum((mine - theirs).values()), sum((theirs - mine).values())
    shared = sum((mine & theirs).values())
    return 0 < max(only_mine, only_theirs) <= most and shared >= 2 * max(only_mine, only_theirs, 1)


def perturbable(text: str) -> bool:
    """Can ``perturb`` make at least one near miss of ``text``?"""
    return any(_apply(text, e) and _norm(_apply(text, e)) != _norm(text)
               for site in _sites(text, random.Random(0)) for e in site.edits)


# -- light, meaning-preserving edits ------------------------------------------------------------

_GREETINGS = ("hey, ", "hi, ", "hello, ", "hey there, ", "ok so ", "so ", "quick question: ", "sorry, ",
              "excuse me, ", "um, ", "question: ", "hi there, ")
_ASKING = ("can you tell me ", "could you tell me ", "do you know ", "i'd like to know ", "please tell me ",
           "i was wondering ")
_CLOSINGS = (" please", ", please", " thanks", ", thank you", " thx", " pls", ", thanks a lot")
_QUESTION_START = frozenset({"what", "what's", "whats", "how", "when", "where", "who", "why", "which", "whose"})
_FUNCTION_START = _QUESTION_START | frozenset({"is", "are", "can", "could", "do", "does", "did", "will", "would",
                                              "should", "my", "the", "please", "tell", "show", "give"})
FILLER_WORDS = frozenset(w for phrase in (*_GREETINGS, *_ASKING, *_CLOSINGS) for w in _WORD.findall(phrase.lower()))
"""Every word ``light_edit`` may add: none of them is a content word of a question."""


def _words(text: str) -> Iterable[str]:
    return (w.lower() for w in _WORD.findall(text))


def light_edit(text: str, rng: random.Random) -> str:
    """``text`` with a meaning-preserving edit or two, for positives that must keep their answer:
    trailing punctuation added or dropped, case changed, or a filler ("hey,", "can you tell me",
    "please", "thanks") added. No word of ``text`` is changed, dropped or moved (only its case).
    The result differs from ``text`` unless ``text`` is blank."""
    if not text.strip():
        return text
    ops = ["punctuation", "case", "prefix", "suffix"]
    for _ in range(8):
        out = text
        for op in rng.sample(ops, rng.choice((1, 1, 2))):
            out = _light(out, op, rng)
        if out != text:
            return out
    return text.rstrip("?.! ") if text.rstrip()[-1] in "?.!" else text + "?"


def _light(text: str, op: str, rng: random.Random) -> str:
    body = text.rstrip()
    end = re.search(r"[?.!]+$", body)
    stem, punct = (body[:end.start()], end.group(0)) if end else (body, "")
    first = next(iter(_words(text)), "")
    if op == "punctuation":
        if punct:
            return stem
        return stem + ("?" if first in _QUESTION_START or first in _AUX_NEGATIVE else rng.choice((".", "!")))
    if op == "case":
        if any(c.isupper() for c in text):
            return text.lower()
        return text[:1].upper() + text[1:] if rng.random() < 0.7 else text.upper()
    if op == "prefix":
        pool = _GREETINGS + (_ASKING if first in _QUESTION_START else ())
        lead = rng.choice(pool)
        opening = text.lstrip()
        if first in _FUNCTION_START and opening[:1].isupper() and opening[1:2].islower():
            opening = opening[0].lower() + opening[1:]
        return lead + opening
    # suffix
    return stem + rng.choice(_CLOSINGS) + punct


# -- slot phrases ---------------------------------------------------------------------------------
# How a sibling of each kind is added to a question that did not have one ("... on sundays").
_SLOT_FRAMES = {"time": ("on {}", "this {}", "for {}"), "place": ("in {}", "from {}", "to {}"),
                "product": ("on {}", "with {}", "for the {}"), "role": ("for {}", "as {}"),
                "thing": ("with {}", "for {}", "about {}"), "unit": ("in {}",)}


def slot_phrases(rng: random.Random) -> tuple[str, str, str]:
    """Two phrases that differ in one sibling (``"on mondays"``, ``"on sundays"``) and their kind.

    Appended to both sides of a pair they make more near misses than the data's own words
    allow: the same phrase on both keeps a paraphrase a paraphrase, different ones make a
    near miss, whatever the question was about. Numbers come as digits ("for 2 people").
    """
    if rng.random() < 0.15:
        m, n = rng.sample(range(1, 13), 2)
        frame = rng.choice(("for {} people", "at {} pm", "level {}", "{} days", "in {} hours", "floor {}"))
        return frame.format(m), frame.format(n), "number"
    kind, plurals, members = rng.choice([g for g in _SIBLINGS if g[0] in _SLOT_FRAMES])
    a, b = rng.sample([m.strip() for m in members.split(",") if m.strip()], 2)
    if plurals and rng.random() < 0.3:
        a, b = _plural(a) or a, _plural(b) or b
    frame = rng.choice(_SLOT_FRAMES[kind])
    return frame.format(a).lower(), frame.format(b).lower(), kind
