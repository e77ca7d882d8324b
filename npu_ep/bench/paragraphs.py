"""Paragraphs the `long` bench suite has espeak-ng speak: written for it, plain words, no digits (a number
said aloud has several right spellings), so each is its own reference transcript."""

PARAGRAPHS = (
    "The committee met on a rainy Tuesday morning to discuss the new library. Most members wanted a larger "
    "reading room with tall windows, while others asked for more quiet places to study. After a long debate "
    "they agreed to hire an architect from the town and to ask the public for ideas before the summer.",

    "Every spring the river rises above its banks and covers the low fields near the old mill. Farmers have "
    "learned to plant their crops a little later, when the water has gone back and the soil has dried. The "
    "children of the village like to watch the ducks and the herons that arrive with the flood.",

    "Our train left the station just after sunrise and climbed slowly into the mountains. Through the window "
    "we could see small farms, narrow roads and a lake that reflected the clouds like a mirror. By noon the "
    "air had become cold and clear, and the conductor brought hot tea to every passenger.",

    "To bake a simple loaf of bread, mix flour, water, salt and a little yeast in a large bowl. Knead the "
    "dough for about ten minutes until it feels smooth, then leave it covered in a warm place. When it has "
    "doubled in size, shape it gently, let it rest again, and bake it until the crust is golden brown.",

    "The museum opened a new exhibition about the history of maps and the people who drew them. Visitors can "
    "see charts made by sailors, drawings of distant coasts, and globes that show the world as it was once "
    "imagined. A small room at the end explains how modern satellites measure the shape of the earth.",

    "Good sleep matters as much as good food and regular exercise. Doctors suggest going to bed at the same "
    "time every night, keeping the bedroom dark and cool, and putting screens away an hour before sleeping. "
    "A short walk in the evening and a light supper can also help the body rest.",

    "The small software company released an update that fixes several problems reported by its users. The "
    "program now starts faster, uses less memory, and saves documents automatically every few minutes. The "
    "developers thanked everyone who sent detailed reports and promised another release before the winter.",

    "On the island the weather changes quickly, so visitors should always carry a warm coat and a raincoat. "
    "In the morning the sea may be calm and blue, and by the afternoon strong winds can bring grey clouds and "
    "heavy rain. The fishermen read the sky carefully before they take their boats out.",

    "My grandmother kept a garden behind her house, full of roses, herbs and tomatoes. She worked in it every "
    "day, early in the morning before the sun was hot. She taught me how to water the plants at their roots, "
    "how to pick the fruit gently, and how to save seeds for the next year.",

    "The city council voted to close the main street to cars on Sunday afternoons. Shops will put tables "
    "outside, musicians will play in the squares, and families will be able to walk and cycle safely. If the "
    "experiment is popular, the council may extend it to the whole weekend next year.",

    "Learning a new language takes patience and a little courage. It helps to listen every day, to read simple "
    "stories, and to speak even when you make mistakes. Many learners find that a friend who speaks the "
    "language well is the best teacher, because conversation makes new words easy to remember.",

    "The astronomers pointed their telescope at a faint cloud of gas far beyond our galaxy. After many nights "
    "of careful observation they found that new stars were forming inside it. Their report describes how the "
    "light from those young stars has travelled across space for millions of years.",
)
