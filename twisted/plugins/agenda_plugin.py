from twisted.application.service import ServiceMaker

agenda = ServiceMaker(
    "twisted_agenda",
    "twisted_agenda.tap",
    "A node of the replicated twisted_agenda contact book",
    "agenda",
)
