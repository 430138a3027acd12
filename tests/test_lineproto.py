"""The client line protocol, in memory: StringTransport connections, a Clock."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IHalfCloseableProtocol

from twisted_agenda import __version__, quoting
from twisted_agenda.lineproto import HELP, MAX_LINE, MAX_PENDING_REPLIES

MARIA = 'ADD "Maria da Silva" "+55 11 91234-5678" email=maria@example.com'
MARIA_LINE = 'CONTACT "Maria da Silva" "+55 11 91234-5678" email=maria@example.com'
JOAO = 'ADD "João d\'Ávila" "(21) 3333-4444" note=vizinho'
JOAO_LINE = 'CONTACT "João d\'Ávila" "(21) 3333-4444" note=vizinho'


@pytest.fixture
def conn(agenda):
    return agenda.connect()


@pytest.fixture
def book(agenda, conn):
    """A connection to a node holding Maria and João."""
    assert conn.request(MARIA) == ['OK added "Maria da Silva"']
    assert conn.request(JOAO) == ['OK added "João d\'Ávila"']
    return conn


# -- greeting and framing -----------------------------------------------------


def test_greeting_names_version_and_node(conn):
    assert conn.greeting == [f"OK agenda {__version__} node=a1"]


def test_replies_end_with_crlf(book):
    book.send("LIST\n")
    out = book.raw()
    assert out == (JOAO_LINE + "\r\n" + MARIA_LINE + "\r\nOK 2\r\n").encode()


def test_trailing_carriage_return_is_ignored(book):
    assert book.request('GET "Maria da Silva"\r') == [MARIA_LINE, "OK 1"]
    assert book.request("GET Bia\r") == ["ERR not-found no contact named Bia"]
    assert book.request("ADD Bia 123\r") == ["OK added Bia"]
    assert book.request("GET bia") == ["CONTACT Bia 123", "OK 1"]


def test_requests_may_end_with_lf_or_crlf(book):
    book.send("LIST\nLIST\r\n")
    assert book.lines() == [JOAO_LINE, MARIA_LINE, "OK 2"] * 2


def test_verbs_are_case_insensitive(book):
    assert (
        book.request("list")
        == book.request("LiSt")
        == [
            JOAO_LINE,
            MARIA_LINE,
            "OK 2",
        ]
    )
    assert book.request('get "maria da silva"') == [MARIA_LINE, "OK 1"]
    assert book.request("hElP")[-1] == "OK help"


def test_blank_lines_get_no_reply(conn):
    conn.send("\n  \n\r\n\t\n")
    assert conn.lines() == []
    assert conn.request("LIST") == ["OK 0"]


def test_a_request_arriving_byte_by_byte(conn):
    for byte in MARIA.encode() + b"\r\n":
        conn.send(bytes([byte]))
    assert conn.lines() == ['OK added "Maria da Silva"']


def test_unbalanced_quotes_are_a_bad_request(conn):
    assert conn.request('ADD "Maria 123') == [
        "ERR bad-request cannot split request: No closing quotation"
    ]


def test_invalid_utf8_is_a_bad_request(book):
    book.send(b"GET Jo\xe3o\n")
    assert book.lines() == ["ERR bad-request request is not valid UTF-8"]
    book.send(b"\xff\xfe\xfd\r\n")
    assert book.lines() == ["ERR bad-request request is not valid UTF-8"]
    assert book.request("FIND joao") == [JOAO_LINE, "OK 1"]


# -- long lines ---------------------------------------------------------------

TOO_LONG = f"ERR too-long request longer than {MAX_LINE} bytes; ignored"


def test_a_line_over_16k_is_refused_and_the_connection_goes_on(book):
    book.send("FIND " + "x" * MAX_LINE + "\n")
    assert book.lines() == [TOO_LONG]
    assert book.request('GET "Maria da Silva"') == [MARIA_LINE, "OK 1"]


def test_a_line_of_exactly_16k_is_served(book):
    request = "FIND " + "x" * (MAX_LINE - len("FIND "))
    assert len(request.encode()) == MAX_LINE
    assert book.request(request) == ["OK 0"]


def test_a_line_of_exactly_16k_from_telnet_is_served(book):
    request = "FIND " + "x" * (MAX_LINE - len("FIND "))
    book.send(request[:9000])  # in two reads, the \r with the second
    book.send(request[9000:] + "\r\n")
    assert book.lines() == ["OK 0"]


def test_a_long_line_in_many_chunks_gets_one_error(book):
    chunk = b"y" * 1000
    book.send(b"FIND ")
    for _ in range(3 * MAX_LINE // len(chunk)):
        book.send(chunk)
    book.send(b"still the same line\nLIST\n")
    assert book.lines() == [TOO_LONG, JOAO_LINE, MARIA_LINE, "OK 2"]


def test_a_long_line_after_a_good_one_in_the_same_chunk(book):
    book.send(b"LIST\n" + b"z" * (MAX_LINE + 10))
    assert book.lines() == [JOAO_LINE, MARIA_LINE, "OK 2", TOO_LONG]
    book.send(b'zzz\nGET "Maria da Silva"\n')
    assert book.lines() == [MARIA_LINE, "OK 1"]


def test_too_long_keeps_its_place_among_pipelined_replies(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + "\n" + "x" * (MAX_LINE + 1) + "\nLIST\n")
    assert conn.lines() == []
    agenda.runner.release()
    assert conn.lines() == ['OK added "Maria da Silva"', TOO_LONG, MARIA_LINE, "OK 1"]


# -- ADD ----------------------------------------------------------------------


def test_add_then_get(conn):
    assert conn.request(MARIA) == ['OK added "Maria da Silva"']
    assert conn.request('GET "Maria da Silva"') == [MARIA_LINE, "OK 1"]


def test_add_with_every_field(conn):
    assert conn.request(
        "ADD Ana 555-0100 note='prima, mora em Lisboa' email=ana@example.pt"
    ) == ["OK added Ana"]
    assert conn.request("GET ana") == [
        'CONTACT Ana 555-0100 email=ana@example.pt note="prima, mora em Lisboa"',
        "OK 1",
    ]


def test_add_name_given_as_a_field(conn):
    assert conn.request("ADD name=note=x 123") == ["OK added note=x"]
    assert conn.request("GET note=x") == ["CONTACT note=x 123", "OK 1"]
    assert conn.request("ADD phone=456 Bia") == ["OK added Bia"]


def test_add_normalises_what_it_stores(conn):
    assert conn.request('ADD "  Ana  " "(11)   5555 0100"') == ["OK added Ana"]
    assert conn.request("GET Ana") == ['CONTACT Ana "(11) 5555 0100"', "OK 1"]


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        ("ADD", "ERR bad-request usage: ADD <name> <phone> [email=<e>]"),
        ("ADD Maria", "ERR bad-request usage: ADD <name> <phone> [email=<e>]"),
        ("ADD Maria 12", "ERR bad-request phone"),
        ("ADD Maria 123abc", "ERR bad-request phone"),
        ('ADD "" 123', "ERR bad-request name must not be empty"),
        (
            "ADD Maria 123 email=maria",
            "ERR bad-request email 'maria' does not look like name@example.com",
        ),
        ("ADD Maria 123 extra", "ERR bad-request unexpected argument 'extra'"),
        (
            "ADD Maria 123 birthday=1990",
            "ERR bad-request unknown field 'birthday' (fields: name, phone, email, "
            "note)",
        ),
        ("ADD Maria 123 phone=456", "ERR bad-request phone given twice"),
        ("ADD Maria 123 email=a@b.c EMAIL=d@e.f", "ERR bad-request email given twice"),
        (
            "ADD " + "x" * 201 + " 123",
            "ERR bad-request name is longer than 200 characters",
        ),
        (
            "ADD Maria 123 note=" + "n" * 2001,
            "ERR bad-request note is longer than 2000 characters",
        ),
    ],
)
def test_add_refuses_bad_requests(conn, request_line, error):
    # Field rules (model.py, phone.py) word their own messages; the
    # protocol's part is the code and naming the field.
    [reply] = conn.request(request_line)
    assert reply.startswith(error)
    assert conn.request("LIST") == ["OK 0"]


def test_add_refuses_an_existing_name_whatever_its_case_or_form(book):
    assert book.request('ADD "MARIA DA SILVA" 999') == [
        'ERR exists a contact named "MARIA DA SILVA" exists'
    ]
    nfd = unicodedata.normalize("NFD", "JOÃO D'ÁVILA")
    assert book.request(f'ADD "{nfd}" 999') == [
        'ERR exists a contact named "JOÃO D\'ÁVILA" exists'
    ]
    assert book.request("LIST") == [JOAO_LINE, MARIA_LINE, "OK 2"]


def test_add_replies_only_once_the_write_is_durable(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + "\n")
    assert conn.lines() == []
    assert agenda.node.journal.fsyncs == 0
    agenda.runner.release()
    assert agenda.node.journal.fsyncs == 1
    assert conn.lines() == ['OK added "Maria da Silva"']


# -- UPDATE -------------------------------------------------------------------


def test_update_phone_positionally_or_by_name(book):
    assert book.request('UPDATE "maria da silva" 11-5555-0000') == [
        'OK updated "Maria da Silva"'
    ]
    assert book.request('GET "Maria da Silva"') == [
        'CONTACT "Maria da Silva" 11-5555-0000 email=maria@example.com',
        "OK 1",
    ]
    assert book.request('UPDATE "Maria da Silva" phone=123') == [
        'OK updated "Maria da Silva"'
    ]
    assert book.request('GET "Maria da Silva"')[0] == (
        'CONTACT "Maria da Silva" 123 email=maria@example.com'
    )


def test_update_optional_fields(book):
    assert book.request(
        'UPDATE "Maria da Silva" note="trabalho" email=m@silva.com.br'
    ) == ['OK updated "Maria da Silva"']
    assert book.request('GET "Maria da Silva"')[0] == (
        'CONTACT "Maria da Silva" "+55 11 91234-5678" email=m@silva.com.br'
        " note=trabalho"
    )


@pytest.mark.parametrize("empty", ["email=", 'email=""', "email=''"])
def test_update_with_an_empty_value_clears_an_optional_field(book, empty):
    assert book.request(f'UPDATE "Maria da Silva" {empty}') == [
        'OK updated "Maria da Silva"'
    ]
    assert book.request('GET "Maria da Silva"') == [
        'CONTACT "Maria da Silva" "+55 11 91234-5678"',
        "OK 1",
    ]


def test_update_clears_a_note(book):
    assert book.request('UPDATE "João d\'Ávila" note=') == [
        'OK updated "João d\'Ávila"'
    ]
    assert book.request('GET "João d\'Ávila"')[0] == (
        'CONTACT "João d\'Ávila" "(21) 3333-4444"'
    )


def test_update_to_the_same_value_is_ok_and_durable(agenda, book):
    # It still counts as the latest write (another node may hold an older
    # edit): so it is journaled like any other.
    fsyncs = agenda.node.journal.fsyncs
    assert book.request('UPDATE "Maria da Silva" email=maria@example.com') == [
        'OK updated "Maria da Silva"'
    ]
    assert agenda.node.journal.fsyncs == fsyncs + 1


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (
            "UPDATE",
            "ERR bad-request usage: UPDATE <name> [<phone>] [email=<e>] [note=<n>]",
        ),
        (
            'UPDATE "Maria da Silva"',
            "ERR bad-request usage: UPDATE <name> [<phone>] [email=<e>] [note=<n>]",
        ),
        ('UPDATE "Maria da Silva" phone=', "ERR bad-request phone must not be empty"),
        ('UPDATE "Maria da Silva" ""', "ERR bad-request phone must not be empty"),
        (
            'UPDATE "Maria da Silva" 123 456',
            "ERR bad-request unexpected argument '456'",
        ),
        ("UPDATE Nobody email=", "ERR not-found no contact named Nobody"),
        (
            'UPDATE "Maria da Silva" email=nope',
            "ERR bad-request email 'nope' does not look like name@example.com",
        ),
    ],
)
def test_update_refuses_bad_requests(book, request_line, error):
    assert book.request(request_line) == [error]
    assert book.request('GET "Maria da Silva"') == [MARIA_LINE, "OK 1"]


# -- REMOVE -------------------------------------------------------------------


def test_remove(book):
    assert book.request('REMOVE "MARIA DA SILVA"') == ['OK removed "Maria da Silva"']
    assert book.request('GET "Maria da Silva"') == [
        'ERR not-found no contact named "Maria da Silva"'
    ]
    assert book.request('REMOVE "Maria da Silva"') == [
        'ERR not-found no contact named "Maria da Silva"'
    ]
    assert book.request("LIST") == [JOAO_LINE, "OK 1"]


def test_a_removed_contact_can_be_added_again_without_its_old_fields(book):
    book.request('REMOVE "Maria da Silva"')
    assert book.request('ADD "Maria da Silva" 123') == ['OK added "Maria da Silva"']
    assert book.request('GET "Maria da Silva"') == [
        'CONTACT "Maria da Silva" 123',
        "OK 1",
    ]


@pytest.mark.parametrize("args", ["", " a b"])
def test_remove_takes_one_name(book, args):
    assert book.request("REMOVE" + args) == ["ERR bad-request usage: REMOVE <name>"]


# -- GET, LIST, FIND ----------------------------------------------------------


def test_get_matches_names_after_nfc_and_casefold(book):
    for name in [
        "João d'Ávila",
        "JOÃO D'ÁVILA",
        unicodedata.normalize("NFD", "joão d'ávila"),
    ]:
        assert book.request(f'GET "{name}"') == [JOAO_LINE, "OK 1"]


def test_get_does_not_ignore_accents(book):
    assert book.request('GET "Joao d\'Avila"') == [
        'ERR not-found no contact named "Joao d\'Avila"'
    ]


@pytest.mark.parametrize("args", ["", " a b"])
def test_get_takes_one_name(book, args):
    assert book.request("GET" + args) == ["ERR bad-request usage: GET <name>"]


def test_list_of_an_empty_book(conn):
    assert conn.request("LIST") == ["OK 0"]


def test_list_is_sorted_by_name_ignoring_case(conn):
    for name in ["carla", "Bruno", "ana", "Ze", "DANI"]:
        conn.request(f"ADD {name} 123")
    assert [quoting.split(line)[1] for line in conn.request("LIST")[:-1]] == [
        "ana",
        "Bruno",
        "carla",
        "DANI",
        "Ze",
    ]


def test_list_sorts_accented_names_with_their_letter(conn):
    for name in ["Zé", "Álvaro", "Bruno", "Érica", "Ana"]:
        conn.request(f"ADD {name} 123")
    assert [quoting.split(line)[1] for line in conn.request("LIST")[:-1]] == [
        "Álvaro",
        "Ana",
        "Bruno",
        "Érica",
        "Zé",
    ]


def test_list_takes_no_arguments(book):
    assert book.request("LIST maria") == [
        "ERR bad-request LIST takes no arguments; try FIND"
    ]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("joao", [JOAO_LINE]),
        ("JOÃO", [JOAO_LINE]),
        ("avila", [JOAO_LINE]),
        ("da silva", [MARIA_LINE]),
        ('"da silva"', [MARIA_LINE]),
        ("EXAMPLE", [MARIA_LINE]),
        ("11912345678", [MARIA_LINE]),
        ('"11 91234-5678"', [MARIA_LINE]),
        ("3333 4444", [JOAO_LINE]),
        ("a", [JOAO_LINE, MARIA_LINE]),
        ("nobody", []),
        ("vizinho", []),
    ],
)
def test_find_ignores_case_and_accents_and_matches_phone_digits(book, query, found):
    assert book.request(f"FIND {query}") == [*found, f"OK {len(found)}"]


def test_find_needs_text(book):
    assert book.request("FIND") == ["ERR bad-request usage: FIND <text>"]
    assert book.request('FIND "  "') == ["ERR bad-request usage: FIND <text>"]


# -- HELP, QUIT, STATUS, unknown ----------------------------------------------


def test_help_lists_every_command(conn):
    reply = conn.request("HELP")
    assert reply == [*HELP.splitlines(), "OK help"]
    text = "\n".join(reply)
    for verb in ["ADD", "UPDATE", "REMOVE", "GET", "LIST", "FIND", "WATCH"]:
        assert verb in text
    for verb in ["UNWATCH", "STATUS", "HELP", "QUIT"]:
        assert verb in text
    assert not any(line.startswith(("OK", "ERR")) for line in reply[:-1])


def test_quit_says_bye_and_closes(conn):
    assert conn.request("QUIT") == ["OK bye"]
    assert conn.closed


def test_nothing_after_quit_is_read(conn):
    conn.send("QUIT\nLIST\n" + MARIA + "\n")
    assert conn.lines() == ["OK bye"]
    assert conn.closed
    conn.send("LIST\n")
    assert conn.lines() == []


def test_quit_after_a_huge_pipelined_tail(conn):
    conn.send("QUIT\n" + "x" * (2 * MAX_LINE))
    assert conn.lines() == ["OK bye"]


def test_quit_waits_for_pending_writes(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + "\nQUIT\n")
    assert conn.lines() == []
    assert not conn.closed
    agenda.runner.release()
    assert conn.lines() == ['OK added "Maria da Silva"', "OK bye"]
    assert conn.closed


def test_status(agenda, book):
    assert book.request("STATUS") == [
        "node=a1",
        f"version={__version__}",
        "contacts=2",
        "vv=a1:2",
        "OK status",
    ]


def test_status_of_an_empty_node(conn):
    assert conn.request("STATUS") == [
        "node=a1",
        f"version={__version__}",
        "contacts=0",
        "vv=-",
        "OK status",
    ]


@pytest.mark.parametrize("verb", ["FOO", "ADDX", "DO_ADD", "_LINE"])
def test_unknown_command(conn, verb):
    assert conn.request(f"{verb} a b") == [
        f"ERR unknown-command unknown command {verb}; try HELP"
    ]


def test_unknown_command_is_quoted(conn):
    assert conn.request('"two words" x') == [
        'ERR unknown-command unknown command "TWO WORDS"; try HELP'
    ]


def test_control_characters_a_client_sent_are_never_echoed(conn):
    assert conn.request("\x1b[2J x") == [
        'ERR unknown-command unknown command "\\\\x1b[2J"; try HELP'
    ]
    assert conn.request('GET "a\x1b[2Jb"') == [
        "ERR bad-request name must not contain control characters"
    ]


# -- WATCH --------------------------------------------------------------------


def test_watch_streams_changes_from_other_connections(agenda, book):
    watcher = agenda.connect()
    assert watcher.request("WATCH") == ["OK watching"]
    assert book.request('UPDATE "Maria da Silva" note=chefe') == [
        'OK updated "Maria da Silva"'
    ]
    assert watcher.lines() == [
        'EVENT updated "Maria da Silva" "+55 11 91234-5678" email=maria@example.com'
        " note=chefe"
    ]
    book.request("ADD Bia 123 email=bia@example.com")
    assert watcher.lines() == ["EVENT added Bia 123 email=bia@example.com"]
    book.request('REMOVE "João d\'Ávila"')
    assert watcher.lines() == [
        'EVENT removed "João d\'Ávila" "(21) 3333-4444" note=vizinho'
    ]


def test_events_come_only_once_durable(agenda, book):
    watcher = agenda.connect()
    watcher.request("WATCH")
    agenda.runner.holding = True
    book.send("ADD Bia 123\n")
    assert watcher.lines() == []
    agenda.runner.release()
    assert watcher.lines() == ["EVENT added Bia 123"]
    assert book.lines() == ["OK added Bia"]


def test_a_watcher_sees_its_own_changes_and_may_still_ask(agenda, book):
    assert book.request("WATCH") == ["OK watching"]
    assert book.request("ADD Bia 123") == ["EVENT added Bia 123", "OK added Bia"]
    assert book.request("GET Bia") == ["CONTACT Bia 123", "OK 1"]


def test_no_event_for_a_refused_or_empty_change(agenda, book):
    watcher = agenda.connect()
    watcher.request("WATCH")
    book.request('ADD "Maria da Silva" 123')
    book.request('UPDATE "Maria da Silva" email=maria@example.com')
    assert watcher.lines() == []


def test_watch_twice_still_one_event_per_change(agenda, book):
    watcher = agenda.connect()
    assert watcher.request("WATCH") == ["OK watching"]
    assert watcher.request("WATCH") == ["OK watching"]
    book.request("ADD Bia 123")
    assert watcher.lines() == ["EVENT added Bia 123"]


def test_unwatch_stops_events(agenda, book):
    watcher = agenda.connect()
    watcher.request("WATCH")
    assert watcher.request("UNWATCH") == ["OK unwatched"]
    book.request("ADD Bia 123")
    assert watcher.lines() == []
    assert agenda.node.watchers == set()


def test_a_closed_watcher_is_forgotten(agenda, book):
    watcher = agenda.connect()
    watcher.request("WATCH")
    assert len(agenda.node.watchers) == 1
    watcher.lose()
    assert agenda.node.watchers == set()
    assert book.request("ADD Bia 123") == ["OK added Bia"]


# -- idle timeout -------------------------------------------------------------


def test_an_idle_connection_is_closed(agenda):
    conn = agenda.connect(idle_timeout=10)
    agenda.clock.advance(9.9)
    assert not conn.closed
    conn.request("LIST")
    agenda.clock.advance(9.9)
    assert not conn.closed
    agenda.clock.advance(0.2)
    assert conn.closed
    assert conn.lines() == ["ERR timeout idle for too long; closing"]


def test_partial_input_counts_as_activity(agenda):
    conn = agenda.connect(idle_timeout=10)
    agenda.clock.advance(9)
    conn.send("LI")
    agenda.clock.advance(9)
    assert not conn.closed


def test_watchers_never_time_out(agenda, book):
    watcher = agenda.connect(idle_timeout=10)
    watcher.request("WATCH")
    agenda.clock.advance(100_000)
    assert not watcher.closed
    book.request("ADD Bia 123")
    assert watcher.lines() == ["EVENT added Bia 123"]


def test_unwatch_brings_the_timeout_back(agenda):
    watcher = agenda.connect(idle_timeout=10)
    watcher.request("WATCH")
    agenda.clock.advance(50)
    watcher.request("UNWATCH")
    agenda.clock.advance(10.1)
    assert watcher.closed


def test_no_timeout_when_disabled(agenda):
    conn = agenda.connect(idle_timeout=None)
    agenda.clock.advance(1e9)
    assert not conn.closed


# -- pipelining ---------------------------------------------------------------


def test_pipelined_replies_come_in_request_order(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + '\nGET "Maria da Silva"\nLIST\nHELP\n')
    assert conn.lines() == []  # everything waits behind the first write
    conn.send("ADD Bia 123\nFIND bia\nADD Bia 456\nSTATUS\n")
    assert conn.lines() == []
    # One write at a time: the first batch, then what queued behind it.
    assert agenda.runner.release() == 2
    assert conn.lines() == [
        'OK added "Maria da Silva"',
        MARIA_LINE,
        "OK 1",
        MARIA_LINE,
        "OK 1",
        *HELP.splitlines(),
        "OK help",
        "OK added Bia",
        "CONTACT Bia 123",
        "OK 1",
        "ERR exists a contact named Bia exists",
        "node=a1",
        f"version={__version__}",
        "contacts=2",
        "vv=a1:2",
        "OK status",
    ]


def test_writes_complete_asynchronously_yet_replies_stay_in_order(agenda, conn):
    agenda.runner.holding = True
    conn.send("ADD A1 111\n")
    agenda.settle()  # the first write is now on the (held) writer thread
    conn.send("ADD A2 222\nLIST\nADD A3 333\nGET A1\n")
    assert conn.lines() == []
    assert len(agenda.runner.held) == 1
    # First write done: its reply goes; the rest wait for the second batch.
    f, args, d = agenda.runner.held.pop(0)
    d.callback(f(*args))
    assert conn.lines() == ["OK added A1"]
    assert len(agenda.runner.held) == 1
    agenda.runner.release()
    assert conn.lines() == [
        "OK added A2",
        "CONTACT A1 111",
        "CONTACT A2 222",
        "OK 2",
        "OK added A3",
        "CONTACT A1 111",
        "OK 1",
    ]


def test_one_connection_waiting_does_not_hold_up_another(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + "\n")
    other = agenda.connect()
    assert other.request("HELP")[-1] == "OK help"
    assert conn.lines() == []
    agenda.runner.release()
    assert conn.lines() == ['OK added "Maria da Silva"']


def test_many_pipelined_writes_share_one_fsync(agenda, conn):
    conn.send("".join(f"ADD c{i} {i:03d}\n" for i in range(100)), settle=False)
    assert agenda.node.journal.fsyncs == 0
    agenda.settle()
    assert agenda.node.journal.fsyncs == 1
    assert conn.lines() == [f"OK added c{i}" for i in range(100)]


def test_a_client_that_never_reads_is_paused(agenda, conn):
    agenda.runner.holding = True
    conn.send(MARIA + "\n" + "LIST\n" * (MAX_PENDING_REPLIES + 1))
    assert conn.transport.producerState == "paused"
    agenda.runner.release()
    assert conn.transport.producerState == "producing"
    assert conn.lines()[-1] == "OK 1"


# -- half close ---------------------------------------------------------------


def test_a_client_that_stops_sending_still_gets_its_replies(agenda, conn):
    # ``printf 'ADD ..\nLIST\n' | nc -N host port`` shuts down its sending
    # side right after the requests; the answers must still arrive.
    assert IHalfCloseableProtocol.providedBy(conn.proto)
    agenda.runner.holding = True
    conn.send(MARIA + "\nLIST\n")
    conn.proto.readConnectionLost()
    assert not conn.closed
    agenda.runner.release()
    assert conn.lines() == ['OK added "Maria da Silva"', MARIA_LINE, "OK 1"]
    assert conn.closed


def test_half_close_with_nothing_pending_closes(conn):
    conn.proto.readConnectionLost()
    assert conn.closed


# -- the journal failed -------------------------------------------------------

DISK_FULL = OSError(28, "No space left on device")
UNAVAILABLE = "ERR unavailable journal write failed: [Errno 28] No space left on device"


@pytest.mark.logs_errors
def test_writes_are_refused_once_the_journal_failed(agenda, book):
    agenda.runner.failing = DISK_FULL
    assert book.request("ADD Bia 123") == [UNAVAILABLE]
    agenda.runner.failing = None  # even if the disk comes back
    assert book.request("ADD Carla 456") == [
        "ERR unavailable journal failed; writes are off"
    ]
    assert book.request('UPDATE "Maria da Silva" note=x')[0].startswith(
        "ERR unavailable "
    )
    assert book.request('REMOVE "Maria da Silva"')[0].startswith("ERR unavailable ")
    # Reads go on.
    assert book.request('GET "Maria da Silva"') == [MARIA_LINE, "OK 1"]


@pytest.mark.logs_errors
def test_every_write_waiting_on_a_failed_flush_is_refused(agenda, conn):
    agenda.runner.failing = DISK_FULL
    conn.send(MARIA + "\n" + JOAO + "\nHELP\n")
    assert conn.lines()[:2] == [UNAVAILABLE, UNAVAILABLE]


@pytest.mark.logs_errors
def test_a_refused_write_leaves_no_trace(agenda, book):
    agenda.runner.failing = DISK_FULL
    assert book.request("ADD Bia 123") == [UNAVAILABLE]
    assert book.request("GET Bia") == ["ERR not-found no contact named Bia"]


def test_writes_wait_while_peers_hold_more_of_this_node_than_it_does(agenda, book):
    # As after restoring the data folder from a backup: a peer's handshake
    # shows it holds changes of this node that its journal lacks.
    agenda.node.peer_holds("b", {agenda.node.node_id: 5})
    assert book.request("ADD Bia 123") == [
        "ERR unavailable this node is getting its own earlier changes back from"
        " its peers (3 to go); try again shortly"
    ]
    assert book.request('GET "Maria da Silva"') == [MARIA_LINE, "OK 1"]


# -- random input -------------------------------------------------------------

WRITES = ("ADD", "UPDATE", "REMOVE", "QUIT")


def _has_write(data: bytes) -> bool:
    # A write verb could only come from chance; then the book may change.
    text = data.decode("utf-8", "ignore").upper()
    return any(verb in text for verb in WRITES)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise_nor_change_the_book(agenda, chunks):
    assume(not _has_write(b"".join(chunks)))
    node = agenda.node
    before = (node.contacts(), dict(node.replica.vv), node.journal.fsyncs)
    conn = agenda.connect(idle_timeout=5)
    for chunk in chunks:
        conn.send(chunk)
    conn.send(b"\nSTATUS\n")
    lines = conn.lines()
    assert lines[-1] == "OK status"
    assert not any(line.startswith("ERR internal") for line in lines)
    conn.lose()
    agenda.conns.remove(conn)
    assert (node.contacts(), dict(node.replica.vv), node.journal.fsyncs) == before
    assert node.watchers == set()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=80))
def test_random_text_gets_exactly_one_reply(agenda, text):
    assume("\n" not in text and text.strip() and not _has_write(text.encode()))
    conn = agenda.connect()
    conn.send(text.encode() + b"\nHELP\n")
    lines = conn.lines()
    help_reply = [*HELP.splitlines(), "OK help"]
    assert lines[-len(help_reply) :] == help_reply
    reply = lines[: -len(help_reply)]
    assert reply, text
    assert reply[-1].startswith(("OK", "ERR")), reply
    assert not any(line.startswith(("OK", "ERR")) for line in reply[:-1]), reply
    assert not reply[-1].startswith("ERR internal"), reply
    conn.lose()
    agenda.conns.remove(conn)
