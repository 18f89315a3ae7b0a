"""The simulated people of the taste benchmark and of its meta-training (docs/LEARNING.md, "Taste").

Running the LLM for thousands of simulated people is too slow on CPUs, so candidate replies are
*rendered*: one content (a question and its answer, hand-written in English, French, Spanish and
German) in every style of the grid length × tone × emoji × language (brief: the answer's core
sentence; detailed: with two more sentences, sometimes as list lines; formal or casual openers and
closers, English contractions when casual; a content emoji and a generic one). The questions are
rendered the same way in the person's own writing style.

A simulated person has a hidden preference: a language (always cared about), and on each of
length (brief / detailed), tone (formal / casual) and emoji (yes / no) either a pole or
indifference. The population (``sample_person``):

- each writes in one of the four languages; 80 % of non-English writers want replies in their own
  language, 20 % want English; English writers want English;
- length: brief 40 %, detailed 30 %, indifferent 30 %; tone: formal 35 %, casual 35 %,
  indifferent 30 %; emoji: with a casual tone yes 50 % / no 20 %, with a formal one yes 10 % /
  no 60 %, else yes 30 % / no 40 % (the rest indifferent);
- how they write (``Person.writes``): a casual person writes casually 75 % of the time, a formal
  one formally 75 %, an indifferent one either way; someone who wants emoji puts one in their
  messages 60 % of the time, one who does not 5 %, an indifferent one 25 %.

**The rule**: a person gives 👍 to a reply iff it matches their preference on every dimension they
care about (language always; length, tone and emoji unless indifferent), else 👎.
``preference_match`` is the share of replies that earn a 👍 by this rule.

Held out from meta-training: 6 of the 16 contents (``TEST_CONTENTS``), half of every phrase list
(openers, closers, emoji, question wrappers: the odd-numbered ones), and a quarter of the
preference combinations (language × length × tone × emoji; ``split_combos``): the people of the
benchmark have combinations no training person had, and see contents and phrasings that training
never rendered.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import product
from typing import TypeVar

import numpy as np

from ..learning.preference import (
    ASKER,
    LANGUAGES,
    LENGTHS,
    STYLE_FEATURES,
    TONES,
    Style,
    asker_vector,
    combine,
    style_vector,
)

__all__ = ["COMBOS", "CONTENTS", "GRID", "TEST_CONTENTS", "TRAIN_CONTENTS", "Person", "Preference", "Turns", "World",
           "render", "render_question", "sample_person", "split_combos"]


T = TypeVar("T")


@dataclass(frozen=True)
class Content:
    """One thing to answer, per language: the question, the answer's core sentence, two details."""

    emoji: str
    question: dict[str, str]
    core: dict[str, str]
    details: dict[str, tuple[str, str]]


def _content(emoji: str, *rows: tuple[str, str, str, str]) -> Content:
    by = dict(zip(LANGUAGES, rows, strict=True))
    return Content(emoji, {k: v[0] for k, v in by.items()}, {k: v[1] for k, v in by.items()},
                   {k: (v[2], v[3]) for k, v in by.items()})


CONTENTS: tuple[Content, ...] = (
    _content("📚",
             ("When does the library open?", "The library opens at 9:00 on weekdays.",
              "On Saturdays it opens at 10:00 and closes at 16:00.", "It is closed on Sundays and public holidays."),
             ("Quand la bibliothèque ouvre-t-elle ?", "La bibliothèque ouvre à 9 heures en semaine.",
              "Le samedi, elle ouvre à 10 heures et ferme à 16 heures.",
              "Elle est fermée le dimanche et les jours fériés."),
             ("¿Cuándo abre la biblioteca?", "La biblioteca abre a las 9:00 entre semana.",
              "Los sábados abre a las 10:00 y cierra a las 16:00.", "Está cerrada los domingos y los festivos."),
             ("Wann öffnet die Bibliothek?", "Die Bibliothek öffnet werktags um 9 Uhr.",
              "Am Samstag öffnet sie um 10 Uhr und schließt um 16 Uhr.",
              "An Sonntagen und Feiertagen ist sie geschlossen.")),
    _content("🔑",
             ("How do I reset my password?", "The password can be reset from the account settings page.",
              "The option is under Security, next to the login history.",
              "A reset link is sent by email and stays valid for one hour."),
             ("Comment réinitialiser mon mot de passe ?",
              "Le mot de passe se réinitialise depuis la page des paramètres du compte.",
              "L'option se trouve sous Sécurité, à côté de l'historique des connexions.",
              "Un lien est envoyé par e-mail et reste valable une heure."),
             ("¿Cómo restablezco mi contraseña?",
              "La contraseña se restablece desde la página de ajustes de la cuenta.",
              "La opción está en Seguridad, junto al historial de accesos.",
              "Se envía un enlace por correo que es válido durante una hora."),
             ("Wie setze ich mein Passwort zurück?",
              "Das Passwort lässt sich auf der Seite mit den Kontoeinstellungen zurücksetzen.",
              "Die Option steht unter Sicherheit, neben dem Anmeldeverlauf.",
              "Ein Link wird per E-Mail verschickt und ist eine Stunde lang gültig.")),
    _content("💧",
             ("At what temperature does water boil?", "Water boils at 100 degrees Celsius at sea level.",
              "At higher altitude the boiling point is lower because the air pressure drops.",
              "On a high mountain it can be close to 90 degrees."),
             ("À quelle température l'eau bout-elle ?", "L'eau bout à 100 degrés Celsius au niveau de la mer.",
              "En altitude, le point d'ébullition baisse car la pression de l'air diminue.",
              "Sur une haute montagne, il peut être proche de 90 degrés."),
             ("¿A qué temperatura hierve el agua?", "El agua hierve a 100 grados Celsius al nivel del mar.",
              "En altura el punto de ebullición baja porque la presión del aire disminuye.",
              "En una montaña alta puede estar cerca de los 90 grados."),
             ("Bei welcher Temperatur kocht Wasser?", "Wasser kocht auf Meereshöhe bei 100 Grad Celsius.",
              "In der Höhe sinkt der Siedepunkt, weil der Luftdruck abnimmt.",
              "Auf einem hohen Berg kann er bei etwa 90 Grad liegen.")),
    _content("🌱",
             ("What is photosynthesis?", "Photosynthesis is how plants turn light into chemical energy.",
              "Leaves take in carbon dioxide and water and release oxygen.",
              "The energy is stored as sugar that the plant uses to grow."),
             ("Qu'est-ce que la photosynthèse ?",
              "La photosynthèse permet aux plantes de transformer la lumière en énergie chimique.",
              "Les feuilles absorbent du dioxyde de carbone et de l'eau et rejettent de l'oxygène.",
              "L'énergie est stockée sous forme de sucre qui sert à la croissance."),
             ("¿Qué es la fotosíntesis?",
              "La fotosíntesis es la forma en que las plantas convierten la luz en energía química.",
              "Las hojas absorben dióxido de carbono y agua y liberan oxígeno.",
              "La energía se guarda como azúcar que la planta usa para crecer."),
             ("Was ist Photosynthese?",
              "Bei der Photosynthese wandeln Pflanzen Licht in chemische Energie um.",
              "Die Blätter nehmen Kohlendioxid und Wasser auf und geben Sauerstoff ab.",
              "Die Energie wird als Zucker gespeichert, mit dem die Pflanze wächst.")),
    _content("🚆",
             ("How do I get to the airport by train?",
              "The airport train leaves from the central station every fifteen minutes.",
              "The ride takes about twenty-five minutes.", "Tickets are sold at the machines on the platform."),
             ("Comment aller à l'aéroport en train ?",
              "Le train de l'aéroport part de la gare centrale toutes les quinze minutes.",
              "Le trajet dure environ vingt-cinq minutes.", "Les billets sont vendus aux automates sur le quai."),
             ("¿Cómo llego al aeropuerto en tren?",
              "El tren al aeropuerto sale de la estación central cada quince minutos.",
              "El trayecto dura unos veinticinco minutos.", "Los billetes se venden en las máquinas del andén."),
             ("Wie komme ich mit dem Zug zum Flughafen?",
              "Der Flughafenzug fährt alle fünfzehn Minuten vom Hauptbahnhof ab.",
              "Die Fahrt dauert etwa fünfundzwanzig Minuten.",
              "Fahrkarten gibt es an den Automaten am Bahnsteig.")),
    _content("♻️",
             ("Where does glass go for recycling?", "Glass goes into the green containers at the end of the street.",
              "Lids and corks should be removed first.", "The bottles are collected every Tuesday morning."),
             ("Où faut-il jeter le verre à recycler ?",
              "Le verre va dans les conteneurs verts au bout de la rue.",
              "Il faut d'abord retirer les couvercles et les bouchons.",
              "Les bouteilles sont ramassées chaque mardi matin."),
             ("¿Dónde se recicla el vidrio?", "El vidrio va en los contenedores verdes al final de la calle.",
              "Antes hay que quitar las tapas y los corchos.",
              "Las botellas se recogen todos los martes por la mañana."),
             ("Wohin kommt Altglas?", "Altglas kommt in die grünen Container am Ende der Straße.",
              "Deckel und Korken sollten vorher entfernt werden.",
              "Die Flaschen werden jeden Dienstagmorgen abgeholt.")),
    _content("🌙",
             ("How far away is the Moon?", "The Moon is about 384,000 kilometres from the Earth.",
              "Its distance changes a little during each orbit.",
              "Light needs just over one second to travel that far."),
             ("À quelle distance se trouve la Lune ?", "La Lune est à environ 384 000 kilomètres de la Terre.",
              "Sa distance varie un peu au cours de chaque orbite.",
              "La lumière met un peu plus d'une seconde pour parcourir ce trajet."),
             ("¿A qué distancia está la Luna?", "La Luna está a unos 384.000 kilómetros de la Tierra.",
              "Su distancia cambia un poco en cada órbita.",
              "La luz tarda algo más de un segundo en recorrer esa distancia."),
             ("Wie weit ist der Mond entfernt?", "Der Mond ist etwa 384.000 Kilometer von der Erde entfernt.",
              "Seine Entfernung ändert sich während jeder Umlaufbahn ein wenig.",
              "Das Licht braucht etwas mehr als eine Sekunde für diese Strecke.")),
    _content("📅",
             ("How can I book a meeting room?", "Meeting rooms are booked through the shared calendar.",
              "Each room has its own calendar with its capacity in the name.", "A booking can last up to two hours."),
             ("Comment réserver une salle de réunion ?",
              "Les salles de réunion se réservent dans le calendrier partagé.",
              "Chaque salle a son propre calendrier avec sa capacité dans le nom.",
              "Une réservation peut durer jusqu'à deux heures."),
             ("¿Cómo reservo una sala de reuniones?",
              "Las salas de reuniones se reservan en el calendario compartido.",
              "Cada sala tiene su propio calendario con su capacidad en el nombre.",
              "Una reserva puede durar hasta dos horas."),
             ("Wie buche ich einen Besprechungsraum?",
              "Besprechungsräume werden über den gemeinsamen Kalender gebucht.",
              "Jeder Raum hat einen eigenen Kalender mit der Kapazität im Namen.",
              "Eine Buchung kann bis zu zwei Stunden dauern.")),
    _content("☕",
             ("Why is the coffee machine not working?",
              "The coffee machine usually stops when the water tank is empty.",
              "The tank is on the left side and lifts out easily.",
              "If the light keeps blinking, the machine needs descaling."),
             ("Pourquoi la machine à café ne marche pas ?",
              "La machine à café s'arrête en général quand le réservoir d'eau est vide.",
              "Le réservoir est sur le côté gauche et se retire facilement.",
              "Si le voyant continue de clignoter, la machine doit être détartrée."),
             ("¿Por qué no funciona la cafetera?",
              "La cafetera suele pararse cuando el depósito de agua está vacío.",
              "El depósito está en el lado izquierdo y se saca fácilmente.",
              "Si la luz sigue parpadeando, la máquina necesita descalcificación."),
             ("Warum funktioniert die Kaffeemaschine nicht?",
              "Die Kaffeemaschine bleibt meistens stehen, wenn der Wassertank leer ist.",
              "Der Tank sitzt auf der linken Seite und lässt sich leicht herausnehmen.",
              "Wenn die Lampe weiter blinkt, muss die Maschine entkalkt werden.")),
    _content("😴",
             ("How much sleep does an adult need?", "Most adults need seven to nine hours of sleep a night.",
              "Going to bed at the same time every day helps a lot.",
              "Screens in the last hour before bed make it harder to fall asleep."),
             ("De combien de sommeil un adulte a-t-il besoin ?",
              "La plupart des adultes ont besoin de sept à neuf heures de sommeil par nuit.",
              "Se coucher à la même heure chaque jour aide beaucoup.",
              "Les écrans dans l'heure avant le coucher rendent l'endormissement plus difficile."),
             ("¿Cuánto sueño necesita un adulto?",
              "La mayoría de los adultos necesita entre siete y nueve horas de sueño por noche.",
              "Acostarse a la misma hora todos los días ayuda mucho.",
              "Las pantallas en la última hora antes de dormir dificultan conciliar el sueño."),
             ("Wie viel Schlaf braucht ein Erwachsener?",
              "Die meisten Erwachsenen brauchen sieben bis neun Stunden Schlaf pro Nacht.",
              "Jeden Tag zur gleichen Zeit ins Bett zu gehen hilft sehr.",
              "Bildschirme in der letzten Stunde vor dem Schlafen erschweren das Einschlafen.")),
    _content("☔",
             ("Will it rain tomorrow?", "Rain is expected tomorrow afternoon.",
              "The morning should stay dry with some clouds.",
              "Around 10 millimetres of rain are forecast by evening."),
             ("Va-t-il pleuvoir demain ?", "De la pluie est prévue demain après-midi.",
              "La matinée devrait rester sèche avec quelques nuages.",
              "Environ 10 millimètres de pluie sont annoncés d'ici le soir."),
             ("¿Va a llover mañana?", "Se espera lluvia mañana por la tarde.",
              "La mañana debería seguir seca con algunas nubes.",
              "Se prevén unos 10 milímetros de lluvia hasta la noche."),
             ("Regnet es morgen?", "Für morgen Nachmittag wird Regen erwartet.",
              "Der Vormittag bleibt voraussichtlich trocken mit ein paar Wolken.",
              "Bis zum Abend sind etwa 10 Millimeter Regen vorhergesagt.")),
    _content("🐍",
             ("How do I sort a list in Python?", "A list is sorted with the sorted function or the sort method.",
              "sorted returns a new list, while sort changes the list in place.",
              "Both accept a key argument and reverse=True for descending order."),
             ("Comment trier une liste en Python ?",
              "Une liste se trie avec la fonction sorted ou la méthode sort.",
              "sorted renvoie une nouvelle liste, alors que sort modifie la liste sur place.",
              "Les deux acceptent un argument key et reverse=True pour l'ordre décroissant."),
             ("¿Cómo ordeno una lista en Python?",
              "Una lista se ordena con la función sorted o con el método sort.",
              "sorted devuelve una lista nueva, mientras que sort cambia la lista en el sitio.",
              "Las dos aceptan un argumento key y reverse=True para el orden descendente."),
             ("Wie sortiere ich eine Liste in Python?",
              "Eine Liste wird mit der Funktion sorted oder der Methode sort sortiert.",
              "sorted gibt eine neue Liste zurück, sort ändert die Liste direkt.",
              "Beide nehmen ein key-Argument und reverse=True für absteigende Reihenfolge.")),
    _content("🚲",
             ("How do I fix a flat bike tyre?", "A flat tyre is fixed by patching or replacing the inner tube.",
              "The tube comes out once the tyre is levered off the rim.",
              "A bowl of water shows where the air escapes."),
             ("Comment réparer un pneu de vélo crevé ?",
              "Un pneu crevé se répare en rustinant ou en remplaçant la chambre à air.",
              "La chambre sort une fois le pneu retiré de la jante avec des démonte-pneus.",
              "Une bassine d'eau montre où l'air s'échappe."),
             ("¿Cómo arreglo una rueda pinchada de la bici?",
              "Un pinchazo se arregla con un parche o cambiando la cámara.",
              "La cámara sale cuando la cubierta se separa de la llanta.",
              "Un barreño con agua muestra por dónde se escapa el aire."),
             ("Wie flicke ich einen platten Fahrradreifen?",
              "Ein platter Reifen wird geflickt oder der Schlauch wird ersetzt.",
              "Der Schlauch kommt heraus, sobald der Reifen von der Felge gehebelt ist.",
              "Eine Schüssel Wasser zeigt, wo die Luft entweicht.")),
    _content("🏖️",
             ("How many vacation days do I have?", "Full-time staff get twenty-five vacation days a year.",
              "Unused days can be carried over until the end of March.",
              "Requests go through the HR portal at least two weeks ahead."),
             ("Combien de jours de congé ai-je ?",
              "Le personnel à temps plein a vingt-cinq jours de congé par an.",
              "Les jours non pris peuvent être reportés jusqu'à fin mars.",
              "Les demandes passent par le portail RH au moins deux semaines avant."),
             ("¿Cuántos días de vacaciones tengo?",
              "El personal a tiempo completo tiene veinticinco días de vacaciones al año.",
              "Los días no usados se pueden pasar hasta finales de marzo.",
              "Las solicitudes se hacen en el portal de RR. HH. con dos semanas de antelación."),
             ("Wie viele Urlaubstage habe ich?",
              "Vollzeitkräfte haben fünfundzwanzig Urlaubstage im Jahr.",
              "Nicht genommene Tage lassen sich bis Ende März übertragen.",
              "Anträge laufen mindestens zwei Wochen vorher über das Personalportal.")),
    _content("🍕",
             ("How long should pizza dough rest?", "Pizza dough should rest for at least two hours.",
              "A slow rest in the fridge overnight gives it more flavour.",
              "It should be back at room temperature before shaping."),
             ("Combien de temps la pâte à pizza doit-elle reposer ?",
              "La pâte à pizza doit reposer au moins deux heures.",
              "Un repos lent au réfrigérateur pendant la nuit lui donne plus de goût.",
              "Elle doit revenir à température ambiante avant d'être façonnée."),
             ("¿Cuánto tiempo debe reposar la masa de pizza?",
              "La masa de pizza debe reposar al menos dos horas.",
              "Un reposo lento en la nevera durante la noche le da más sabor.",
              "Debe volver a temperatura ambiente antes de estirarla."),
             ("Wie lange muss Pizzateig ruhen?", "Pizzateig sollte mindestens zwei Stunden ruhen.",
              "Eine langsame Ruhe über Nacht im Kühlschrank gibt mehr Geschmack.",
              "Vor dem Formen sollte er wieder Zimmertemperatur haben.")),
    _content("🎨",
             ("How much is a museum ticket?", "A museum ticket costs twelve euros.",
              "Students and seniors pay eight euros.", "Entry is free on the first Sunday of each month."),
             ("Combien coûte un billet pour le musée ?", "Un billet pour le musée coûte douze euros.",
              "Les étudiants et les seniors paient huit euros.",
              "L'entrée est gratuite le premier dimanche de chaque mois."),
             ("¿Cuánto cuesta una entrada al museo?", "Una entrada al museo cuesta doce euros.",
              "Los estudiantes y los mayores pagan ocho euros.",
              "La entrada es gratuita el primer domingo de cada mes."),
             ("Was kostet eine Eintrittskarte für das Museum?", "Eine Eintrittskarte für das Museum kostet zwölf Euro.",
              "Studierende und Senioren zahlen acht Euro.",
              "Am ersten Sonntag jedes Monats ist der Eintritt frei.")),
)
TRAIN_CONTENTS = tuple(range(10))
TEST_CONTENTS = tuple(range(10, len(CONTENTS)))

# Phrase lists: even-numbered entries render training replies, odd-numbered ones the benchmark's.
FORMAL_OPEN = {
    "en": ("Certainly.", "Of course.", "Thank you for your question.", "I would be glad to assist.", "With pleasure.",
           "Allow me to explain."),
    "fr": ("Certainement.", "Bien sûr.", "Merci pour votre question.", "Je vous aide volontiers.", "Avec plaisir.",
           "Permettez-moi de vous expliquer."),
    "es": ("Por supuesto.", "Desde luego.", "Gracias por su pregunta.", "Con mucho gusto le ayudo.",
           "Es un placer ayudarle.", "Permítame explicarle."),
    "de": ("Selbstverständlich.", "Gerne.", "Vielen Dank für Ihre Frage.", "Ich helfe Ihnen gerne weiter.",
           "Sehr gerne.", "Erlauben Sie mir eine kurze Erklärung."),
}
FORMAL_CLOSE = {
    "en": ("I hope this information is helpful.", "Please let me know if you need anything further.",
           "Kind regards.", "I remain at your disposal for any further questions."),
    "fr": ("J'espère que ces informations vous seront utiles.",
           "N'hésitez pas à me contacter pour toute autre question.", "Cordialement.", "Je reste à votre disposition."),
    "es": ("Espero que esta información le sea útil.", "No dude en consultarme si necesita algo más.",
           "Atentamente.", "Quedo a su disposición para cualquier consulta."),
    "de": ("Ich hoffe, diese Information ist Ihnen hilfreich.", "Bitte melden Sie sich, falls Sie weitere Fragen "
           "haben.", "Mit freundlichen Grüßen.", "Ich stehe Ihnen für weitere Fragen gerne zur Verfügung."),
}
CASUAL_OPEN = {
    "en": ("Hey!", "Sure thing!", "Oh, easy one!", "Yep!", "Hi there!", "Ha, good one!"),
    "fr": ("Salut !", "Ah, facile !", "Ouais !", "Coucou !", "Alors, c'est simple !", "Trop facile !"),
    "es": ("¡Hola!", "¡Claro que sí!", "¡Fácil!", "¡Oye!", "¡Vale!", "¡Buena pregunta!"),
    "de": ("Hey!", "Klar!", "Easy!", "Hi!", "Na klar!", "Ah, gute Frage!"),
}
CASUAL_CLOSE = {
    "en": ("Hope that helps!", "Cheers!", "Have fun!", "No worries!"),
    "fr": ("J'espère que ça aide !", "Bonne journée !", "Voilà !", "À plus !"),
    "es": ("¡Espero que te sirva!", "¡Suerte!", "¡Listo!", "¡Hasta luego!"),
    "de": ("Hoffe, das hilft!", "Viel Spaß!", "Passt!", "Bis dann!"),
}
EXTRA_EMOJI = ("🙂", "😊", "👍", "🎉", "✨", "👌")
ASK_FORMAL = {
    "en": (("Hello,", "Thank you."), ("Good morning,", "Thank you in advance."), ("Excuse me,", "Many thanks."),
           ("Dear assistant,", "Kind regards.")),
    "fr": (("Bonjour,", "Merci."), ("Excusez-moi,", "Merci d'avance."), ("Madame, Monsieur,", "Cordialement."),
           ("Bonsoir,", "Je vous remercie.")),
    "es": (("Buenos días,", "Gracias."), ("Disculpe,", "Muchas gracias de antemano."),
           ("Estimado asistente,", "Atentamente."), ("Buenas tardes,", "Se lo agradezco.")),
    "de": (("Guten Tag,", "Vielen Dank."), ("Entschuldigen Sie,", "Danke im Voraus."),
           ("Sehr geehrte Damen und Herren,", "Mit freundlichen Grüßen."), ("Guten Morgen,", "Herzlichen Dank.")),
}
ASK_CASUAL = {
    "en": (("hey", "thx"), ("yo", "cheers"), ("hi", ""), ("ok so", "pls")),
    "fr": (("salut", "merci"), ("coucou", "stp"), ("hey", ""), ("dis", "thx")),
    "es": (("hola", "gracias"), ("oye", "porfa"), ("ey", ""), ("buenas", "thx")),
    "de": (("hey", "danke"), ("hi", "thx"), ("moin", ""), ("na", "bitte")),
}
ASK_EMOJI = ("🙂", "😅", "🤔", "🙏")

_CONTRACT = ((r"\bIt is\b", "It's"), (r"\bit is\b", "it's"), (r"\bis not\b", "isn't"), (r"\bdo not\b", "don't"),
             (r"\bcannot\b", "can't"), (r"\bThere is\b", "There's"), (r"\bthat is\b", "that's"))


def _pick(options: tuple[T, ...], rng: random.Random, held_out: bool) -> T:
    """An entry of ``options``: the even-numbered ones for training, the odd-numbered ones held out."""
    return options[rng.randrange(held_out, len(options), 2)]


def render(content: Content, style: Style, rng: random.Random, held_out: bool = False) -> str:
    """``content``'s answer in ``style`` (phrasings drawn by ``rng`` from the training or held-out half)."""
    lang, casual = style.language, style.tone == "casual"
    core = content.core[lang]
    if style.emoji:
        core = f"{core[:-1]} {content.emoji}{core[-1]}" if core[-1] in ".!?" else f"{core} {content.emoji}"
    details = list(content.details[lang])
    opener = _pick(CASUAL_OPEN[lang] if casual else FORMAL_OPEN[lang], rng, held_out)
    if style.length == "brief":
        text = f"{opener} {core}"
    else:
        closer = _pick(CASUAL_CLOSE[lang] if casual else FORMAL_CLOSE[lang], rng, held_out)
        if rng.random() < 0.5:  # the details as list lines
            text = f"{opener} {core}\n" + "".join(f"- {d}\n" for d in details) + closer
        else:
            text = " ".join([opener, core, *details, closer])
    if casual and lang == "en":
        for pattern, short in _CONTRACT:
            text = re.sub(pattern, short, text)
    if style.emoji:
        text = f"{text} {_pick(EXTRA_EMOJI, rng, held_out)}"
    return text


def render_question(content: Content, lang: str, casual: bool, emoji: bool, rng: random.Random,
                    held_out: bool = False) -> str:
    """``content``'s question as a person writing in ``lang``, casually or formally, with an emoji or not."""
    question = content.question[lang]
    if casual:
        opener, closer = _pick(ASK_CASUAL[lang], rng, held_out)
        text = f"{opener} {question[:1].lower()}{question[1:]} {closer}".strip()
    else:
        opener, closer = _pick(ASK_FORMAL[lang], rng, held_out)
        text = f"{opener} {question[:1].lower()}{question[1:]} {closer}"
        text = text[:1].upper() + text[1:]
    if emoji:
        text += f" {_pick(ASK_EMOJI, rng, held_out)}"
    return text


# -- people ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preference:
    """A hidden preference: a language, and per dimension a pole or None (indifferent)."""

    language: str
    length: str | None
    tone: str | None
    emoji: bool | None

    def likes(self, style: Style) -> bool:
        """The rule: 👍 iff ``style`` matches on every dimension the person cares about."""
        return (style.language == self.language and self.length in (None, style.length)
                and self.tone in (None, style.tone) and self.emoji in (None, style.emoji))

    def label(self) -> str:
        parts = [self.language, self.length or "any length", self.tone or "any tone",
                 "any emoji" if self.emoji is None else ("emoji" if self.emoji else "no emoji")]
        return ", ".join(parts)


@dataclass(frozen=True)
class Person:
    """A simulated person: what they want and how they write."""

    preference: Preference
    writes: str  # the language of their messages
    casual_rate: float  # how often their messages are casual
    emoji_rate: float  # how often their messages carry an emoji
    other: str  # the second language of their candidates: English, or for an English writer one drawn

    def candidates(self) -> list[Style]:
        """The style grid offered to them (``GRID`` order): every length, tone and emoji choice, in their
        own language and in ``other`` (as the engine asks for: docs/LEARNING.md, "Taste")."""
        return [Style(length, tone, emoji, lang) for lang, (length, tone, emoji)
                in product((self.writes, self.other), GRID)]


GRID: tuple[tuple[str, str, bool], ...] = tuple(product(LENGTHS, TONES, (True, False)))
"""(length, tone, emoji) in the order of ``TastePrior.prototypes`` (``prototype_index``)."""
COMBOS: tuple[tuple[str, str | None, str | None, bool | None], ...] = tuple(
    product(LANGUAGES, ("brief", "detailed", None), ("formal", "casual", None), (True, False, None)))


def split_combos(seed: int = 0) -> tuple[set[int], set[int], set[int]]:
    """(training, validation, held-out) preference combinations (indices into ``COMBOS``): 60 / 15 / 25 %,
    drawn once by ``seed``."""
    order = list(range(len(COMBOS)))
    random.Random(seed).shuffle(order)
    test = set(order[: len(order) // 4])
    val = set(order[len(order) // 4: len(order) // 4 + len(order) * 15 // 100])
    return set(order) - test - val, val, test


def sample_person(rng: random.Random, allowed: set[int] | None = None) -> Person:
    """A person of the population (module docstring), redrawn until their combination is ``allowed``."""
    while True:
        writes = rng.choice(LANGUAGES)
        wants = writes if writes == "en" or rng.random() < 0.8 else "en"
        length = rng.choices(("brief", "detailed", None), (0.4, 0.3, 0.3))[0]
        tone = rng.choices(("formal", "casual", None), (0.35, 0.35, 0.3))[0]
        emoji_weights = {"casual": (0.5, 0.2, 0.3), "formal": (0.1, 0.6, 0.3), None: (0.3, 0.4, 0.3)}[tone]
        emoji = rng.choices((True, False, None), emoji_weights)[0]
        combo = COMBOS.index((wants, length, tone, emoji))
        if allowed is None or combo in allowed:
            break
    casual_rate = {"casual": 0.75, "formal": 0.25, None: 0.5}[tone]
    emoji_rate = {True: 0.6, False: 0.05, None: 0.25}[emoji]
    other = "en" if writes != "en" else rng.choice([lang for lang in LANGUAGES if lang != "en"])
    return Person(Preference(wants, length, tone, emoji), writes, casual_rate, emoji_rate, other)


# -- turns, as feature arrays ------------------------------------------------------------------


@dataclass
class Turns:
    """Turns of several people: the raw features of every candidate (``Person.candidates`` order) and
    which of them the person would give a 👍."""

    features: np.ndarray  # (P, T, G, D) raw FEATURES
    matches: np.ndarray  # (P, T, G) bool


class World:
    """Rendered replies and questions of some contents, precomputed as feature pools so that turns for
    thousands of people are array lookups: ``renderings`` random renderings of every content in every
    style (and of every question in every writing style), from the training or the held-out phrases."""

    def __init__(self, contents: tuple[int, ...], held_out: bool, renderings: int = 12, seed: int = 0) -> None:
        self.contents, self.held_out, self.renderings = contents, held_out, renderings
        rng = random.Random(seed)
        n_lang, n_grid = len(LANGUAGES), len(GRID)
        replies = np.zeros((len(contents), n_lang, n_grid, renderings, len(STYLE_FEATURES)), np.float32)
        questions = np.zeros((len(contents), n_lang, 2, 2, renderings, len(ASKER)), np.float32)
        self.examples: dict[tuple[int, str, int], str] = {}  # (content, style label, rendering) -> text, a few
        for c, content in enumerate(contents):
            for li, lang in enumerate(LANGUAGES):
                for g, (length, tone, emoji) in enumerate(GRID):
                    for r in range(renderings):
                        text = render(CONTENTS[content], Style(length, tone, emoji, lang), rng, held_out)
                        replies[c, li, g, r] = style_vector(text)
                        if r == 0 and c == 0:
                            self.examples[(content, Style(length, tone, emoji, lang).label(), r)] = text
                for casually, with_emoji in product((0, 1), (0, 1)):
                    for r in range(renderings):
                        text = render_question(CONTENTS[content], lang, bool(casually), bool(with_emoji), rng,
                                               held_out)
                        questions[c, li, casually, with_emoji, r] = asker_vector(text)
        self.replies, self.questions = replies, questions

    def turns(self, people: list[Person], count: int, rng: np.random.Generator) -> Turns:
        """``count`` turns of each of ``people``: a random content, their question in their writing style,
        every candidate of their grid rendered (a random rendering each)."""
        n, grid = len(people), len(GRID)
        content = rng.integers(0, len(self.contents), (n, count))
        writes = np.asarray([LANGUAGES.index(p.writes) for p in people])
        other = np.asarray([LANGUAGES.index(p.other) for p in people])
        casual = rng.random((n, count)) < np.asarray([p.casual_rate for p in people])[:, None]
        emoji = rng.random((n, count)) < np.asarray([p.emoji_rate for p in people])[:, None]
        asked = self.questions[content, writes[:, None], casual.astype(int), emoji.astype(int),
                               rng.integers(0, self.renderings, (n, count))]  # (n, T, A)
        langs = np.concatenate([np.repeat(writes[:, None], grid, 1), np.repeat(other[:, None], grid, 1)], 1)
        cells = np.tile(np.arange(grid), 2)  # (G,)
        pick = rng.integers(0, self.renderings, (n, count, 2 * grid))
        styles = self.replies[content[:, :, None], langs[:, None, :], cells[None, None, :], pick]  # (n, T, G, S)
        flat = combine(styles.reshape(-1, styles.shape[-1]),
                       np.repeat(asked.reshape(-1, asked.shape[-1]), 2 * grid, 0))
        matches = np.asarray([[p.preference.likes(s) for s in p.candidates()] for p in people])  # (n, G)
        return Turns(flat.reshape(n, count, 2 * grid, -1), np.repeat(matches[:, None, :], count, 1))
