"""Paragraphs in German, French, Spanish and Chinese for the planted non-English pages."""
from __future__ import annotations

import random


# Small vocabularies for other languages: (subjects, verbs, objects, adverbials) -> "S V O A."
_FOREIGN = {
    "de": (
        ["Der alte Mann", "Die junge Frau", "Das kleine Kind", "Der Lehrer", "Die Stadt", "Unsere Nachbarin",
         "Der Bürgermeister", "Die Familie", "Der Arzt", "Die Studentin", "Mein Bruder", "Das Team"],
        ["kauft", "sieht", "findet", "baut", "liest", "braucht", "besucht", "erklärt", "öffnet", "verkauft"],
        ["ein neues Haus", "den schönen Garten", "die große Brücke", "einen langen Brief", "das alte Buch",
         "die frische Milch", "den nächsten Zug", "eine warme Jacke", "das neue Museum", "die Zeitung"],
        ["am Morgen", "in der Stadt", "nach der Arbeit", "mit dem Fahrrad", "jeden Tag", "im Sommer",
         "heute nicht", "wieder und wieder", "bei schlechtem Wetter", "auf dem Markt"],
    ),
    "fr": (
        ["Le vieux pêcheur", "La jeune élève", "Mon frère", "Le médecin", "La ville", "Notre voisine",
         "Le maire", "La famille", "Un étudiant", "Le boulanger", "Cette équipe", "Ma cousine"],
        ["achète", "regarde", "trouve", "construit", "lit", "prépare", "visite", "explique", "ouvre", "vend"],
        ["une nouvelle maison", "le joli jardin", "le grand pont", "une longue lettre", "le vieux livre",
         "du pain frais", "le prochain train", "une veste chaude", "le musée", "le journal du matin"],
        ["le matin", "dans la forêt", "après le travail", "à vélo", "chaque été", "en hiver",
         "près de la rivière", "très souvent", "déjà depuis longtemps", "au marché"],
    ),
    "es": (
        ["El viejo pescador", "La joven alumna", "Mi hermano", "El médico", "La ciudad", "Nuestra vecina",
         "El alcalde", "La familia", "Un estudiante", "El panadero", "Este equipo", "Mi hermana"],
        ["compra", "mira", "encuentra", "construye", "lee", "prepara", "visita", "explica", "abre", "vende"],
        ["una casa nueva", "el jardín bonito", "el puente grande", "una carta larga", "el libro viejo",
         "pan fresco", "el próximo tren", "una chaqueta caliente", "el museo", "el periódico de la mañana"],
        ["por la mañana", "en el parque", "después del trabajo", "en bicicleta", "cada verano", "en invierno",
         "cerca del río", "muy a menudo", "con mucho cuidado", "en el mercado"],
    ),
    "ru": (
        ["Старый рыбак", "Молодая учительница", "Мой брат", "Врач", "Наша соседка", "Мэр города",
         "Вся семья", "Студент", "Пекарь", "Эта команда"],
        ["покупает", "видит", "находит", "строит", "читает", "готовит", "посещает", "объясняет", "открывает"],
        ["новый дом", "красивый сад", "большой мост", "длинное письмо", "старую книгу", "свежий хлеб",
         "следующий поезд", "тёплую куртку", "городской музей", "утреннюю газету"],
        ["утром", "в лесу", "после работы", "на велосипеде", "каждое лето", "зимой", "у реки",
         "очень часто", "с большим удовольствием", "на рынке"],
    ),
}
_ZH = (
    ["我们", "他们", "老师", "学生们", "这家公司", "我的朋友", "城市居民", "博物馆的工作人员"],
    ["参观了", "讨论了", "发现了", "需要", "喜欢", "介绍了", "保护了", "研究了"],
    ["新的图书馆", "传统文化", "这个问题", "城市的历史", "美丽的风景", "当地的市场", "古老的桥梁", "环境保护计划"],
    ["今天", "在周末", "每天", "去年", "上个月", "在春天", "晚上", "最近"],
)


def foreign_paragraphs(rng: random.Random, lang: str, n_par: int = 5) -> list[str]:
    if lang == "zh":
        s, v, o, a = _ZH
        return ["".join(f"{rng.choice(a)}{rng.choice(s)}{rng.choice(v)}{rng.choice(o)}。" for _ in range(rng.randint(4, 7)))
                for _ in range(n_par)]
    s, v, o, a = _FOREIGN[lang]
    return [" ".join(f"{rng.choice(s)} {rng.choice(v)} {rng.choice(o)} {rng.choice(a)}." for _ in range(rng.randint(4, 7)))
            for _ in range(n_par)]
