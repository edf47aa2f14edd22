"""Projects on a lab's PostgreSQL server (issue 30): the move SQLite -> server -> SQLite loses
nothing (the same COCO, the same rows, undo still works), several projects share one
database, and every refusal is in words. Runs against the throwaway server of
scripts/pg_throwaway.sh (POLLENSTUDIO_TEST_PG); skipped without one. No mocks."""

import json
import uuid

import cv2
import numpy as np
import psycopg
import pytest

from pollenstudio.cli import main as cli_main
from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import Box, Detection, ReviewStatus
from pollenstudio.project import Project
from pollenstudio.project import dialect as dia
from pollenstudio.project.coco import export_coco
from pollenstudio.project.schema import SCHEMA_VERSION
from pollenstudio.project.server_copy import pull, push


def _img(path, w=120, h=100, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


@pytest.fixture
def server(pg_url):
    """Makes project URLs on the throwaway server; drops their schemas afterwards."""
    made = []

    def url(name=None):
        name = name or f"t{uuid.uuid4().hex[:16]}"
        made.append(name)
        return f"{pg_url}{'&' if '?' in pg_url else '?'}project={name}"

    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _rich_project(folder):
    """A project with something in every table a palynologist's work fills."""
    for i in range(3):
        _img(folder / f"a{i}.png", value=10 + i)
    for z in range(3):
        _img(folder / "stack" / f"f_z{z}.png", value=50 + z)
    _img(folder / "slide-2" / "b.png", value=90)
    p = Project.create(folder, name="Lake core 7")
    p.add_folder(folder, stack_pattern="*_z{z}.png")
    imgs = {r.path: r.id for r in p.images()}
    a0, a1, a2, b = imgs["a0.png"], imgs["a1.png"], imgs["a2.png"], imgs["slide-2/b.png"]
    betula = p.add_category("Betula", hotkey="1")
    pinus = p.add_category("Pinus", color="#123456")
    sub = p.add_category("Betula nana", parent_id=betula)
    p.set_taxon_role(pinus, "marker")
    p.set_sample_settings("slide-2", {"target_sum": 300})
    p.set_um_per_px(0.25, [a0])
    p.set_grain_size_px(40.0)
    p.set_grain_size_px(30.0, [b])
    mv = p.add_model_version("v1", folder / "models" / "v1.safetensors", metrics={"map50": 0.61}, activate=True)
    run = p.start_run("detect", {"conf": 0.25})
    for image_id in (a0, a1, b):
        p.write_proposals(image_id, [
            Detection(Box(5, 5, 30, 30), 0, "Betula", 0.91, topk=(("Betula", 0.91), ("Pinus", 0.05))),
            Detection(Box(50, 40, 80, 70), 0, "Pinus", 0.42, topk=(("Pinus", 0.42), ("Betula", 0.40))),
            Detection(Box(90, 10, 110, 30), 0, "Alnus", 0.2),
        ], model_version_id=mv, run_id=run, doubts=[0.1, 0.8, 0.5])
    p.finish_run(run, "done", {"images": 3})
    anns = p.annotations(a0)
    p.accept(anns[0].id)
    p.relabel(anns[1].id, sub)
    p.reject(anns[2].id)
    p.move_annotation(p.annotations(a1)[0].id, Box(6, 6, 33, 31))
    p.accept_all(a1)
    p.set_outline(anns[0].id, [5, 5, 30, 5, 30, 30, 5, 30])
    p.add_annotation(a2, Box(10, 10, 40, 40), betula, author="anna")
    p.set_image_status(a2, ReviewStatus.REVIEWED)
    gone = p.add_annotation(b, Box(1, 1, 20, 20), pinus)
    p.delete(gone)  # its id must never be handed out again
    p.accept_all(b)
    p.remove_images([imgs["stack/f_z0.png"]])
    p.undo()  # the stack comes back ...
    p.remove_images([imgs["stack/f_z0.png"]])
    p.undo()
    p.reject(p.annotations(b)[0].id)
    p.undo()  # ... and one step waits for redo
    return p, gone


def _tables(p):
    out = {}
    for table in dia.tables(p._conn):
        cols = dia.columns(p._conn, table)
        rows = p._q(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(cols)}").fetchall()
        out[table] = [dict(zip(cols, r)) for r in rows]
    return out


def test_sqlite_to_server_and_back_loses_nothing(tmp_path, server):
    src, gone = _rich_project(tmp_path / "lab")
    before = _tables(src)
    undo_label, redo_label = src.undo_label(), src.redo_label()
    export_coco(src, tmp_path / "out" / "before.json", reviewed_only=False)
    export_coco(src, tmp_path / "out" / "before_reviewed.json")
    src.close()

    url = server()
    report = push(tmp_path / "lab", url)
    assert report.rows["annotations"] == len(before["annotations"]) and report.rebased == 0
    with Project.open(url) as on_server:  # the image root recorded by the push
        assert on_server.folder == (tmp_path / "lab").resolve() and on_server.server is not None
        assert _tables(on_server) == {**before, "meta": on_server_meta(before["meta"], tmp_path / "lab")}
        export_coco(on_server, tmp_path / "out" / "server.json", reviewed_only=False)
        assert on_server.missing_images() == []

    back = tmp_path / "back"  # another folder: stored paths are rewritten to name the same files
    pull(url, back)
    with Project.open(back) as p:
        export_coco(p, tmp_path / "out" / "after.json", reviewed_only=False)
        export_coco(p, tmp_path / "out" / "after_reviewed.json")
        assert p.missing_images() == []
        after = _tables(p)
        assert after["images"] != before["images"]  # paths now relative to the new folder ...
        assert [p.image_path(r) for r in p.images()] == [(tmp_path / "lab" / r["path"]).resolve()
                                                         for r in before["images"]]  # ... to the same files
        for table in set(before) - {"images", "model_versions", "history"}:
            assert after[table] == before[table], table
        assert p.model_file(p.active_model_version()) == (tmp_path / "lab" / "models" / "v1.safetensors").resolve()
        assert (p.undo_label(), p.redo_label()) == (undo_label, redo_label)
        new = p.add_annotation(p.images()[0].id, Box(2, 2, 12, 12), p.categories()[0].id)
        assert new > gone  # ids of deleted rows are not reused (their undo could bring them back)
        p.undo()
        p.undo()  # the history came along: steps made before the move undo after it
    for name in ("", "_reviewed"):
        assert (tmp_path / "out" / f"after{name}.json").read_text() == (tmp_path / "out" / f"before{name}.json").read_text()
    assert json.loads((tmp_path / "out" / "server.json").read_text()) == json.loads(
        (tmp_path / "out" / "before.json").read_text())


def on_server_meta(meta_rows, root):
    rows = [r for r in meta_rows if r["key"] != "image_root"] + [{"key": "image_root", "value": str(root.resolve())}]
    return sorted(rows, key=lambda r: r["key"])


def test_projects_share_one_database_apart(tmp_path, server):
    one, two = server(), server()
    with Project.create(one, name="core A", image_root=tmp_path) as a, \
            Project.create(two, name="core B", image_root=tmp_path) as b:
        a.add_category("Betula")
        b.add_category("Pinus")
        b.add_category("Alnus")
    with Project.open(one) as a, Project.open(two) as b:
        assert (a.name, [c.name for c in a.categories()]) == ("core A", ["Betula"])
        assert (b.name, [c.name for c in b.categories()]) == ("core B", ["Pinus", "Alnus"])


def test_each_workstation_maps_the_image_root(tmp_path, server, monkeypatch):
    _img(tmp_path / "mount_a" / "s1" / "x.png")
    _img(tmp_path / "mount_b" / "s1" / "x.png")
    url = server()
    with Project.create(url, image_root=tmp_path / "mount_a") as p:
        p.add_images([tmp_path / "mount_a" / "s1" / "x.png"])
        assert p.images()[0].path == "s1/x.png"
    monkeypatch.setenv("POLLENSTUDIO_IMAGE_ROOT", str(tmp_path / "mount_b"))
    with Project.open(url) as p:  # another workstation: its own mount of the same share
        assert p.image_path(p.images()[0]) == (tmp_path / "mount_b" / "s1" / "x.png").resolve()
    with Project.open(url, image_root=tmp_path / "mount_a") as p:
        assert p.image_path(p.images()[0]) == (tmp_path / "mount_a" / "s1" / "x.png").resolve()
    with Project.open(url, image_root=tmp_path / "not_mounted") as p:  # says how to fix it, in words
        problem = p.file_problem(p.images()[0])
        assert f"relink \"{p.location}\" SEARCH_DIR" in problem and "POLLENSTUDIO_IMAGE_ROOT" in problem


def test_refusals_are_in_words(tmp_path, server, pg_url):
    url = server()
    Project.create(url, image_root=tmp_path).close()
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(url, image_root=tmp_path)
    with pytest.raises(ProjectError, match=r"no project 'nosuch'.*its projects: .*t"):
        Project.open(server("nosuch"))
    with pytest.raises(ProjectError, match=r"names no project: add \?project=NAME"):
        Project.open(pg_url)
    with pytest.raises(ProjectError, match="lower-case letters"):
        Project.open(pg_url + "?project=Lake-Core")
    with pytest.raises(ProjectError, match="cannot reach the PostgreSQL server 127.0.0.1:1 "):
        Project.open("postgresql://postgres@127.0.0.1:1/postgres?project=x")
    wrong = pg_url.replace("postgresql://postgres@", "postgresql://pollen_pw:not-it@")
    with pytest.raises(ProjectError, match="refused user pollen_pw: wrong password") as err:
        Project.open(wrong + "?project=x")
    assert "not-it" not in str(err.value)
    with pytest.raises(ProjectError, match="has no database 'nodb'"):
        Project.open(pg_url.rsplit("/", 1)[0] + "/nodb?project=x")
    name = dia.parse_server_url(url).project
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'UPDATE "{name}".{dia.VERSION_TABLE} SET version = {SCHEMA_VERSION + 1}')
    with pytest.raises(ProjectError, match=f"newer PollenStudio \\(schema {SCHEMA_VERSION + 1}"):
        Project.open(url)


def test_push_refuses_an_existing_name_and_leaves_nothing_half_made(tmp_path, server):
    _img(tmp_path / "p" / "a.png")
    with Project.create(tmp_path / "p") as p:
        p.add_folder(tmp_path / "p")
    url = server()
    Project.create(url, image_root=tmp_path).close()
    with pytest.raises(ProjectError, match="already holds a project"):
        push(tmp_path / "p", url)
    with Project.open(url) as p:
        assert p.image_count() == 0  # the project that was there is untouched
    with pytest.raises(ProjectError, match="already holds a project"):
        pull(url, tmp_path / "p")


def test_cli_commands_take_a_server_url(tmp_path, server, capsys):
    _img(tmp_path / "p" / "a.png")
    with Project.create(tmp_path / "p") as p:
        p.add_folder(tmp_path / "p")
        p.add_annotation(1, Box(1, 1, 20, 20), p.add_category("Betula"))
    url = server()
    assert cli_main(["server", "push", str(tmp_path / "p"), url]) == 0
    assert cli_main(["export", url, "--format", "coco", "--out", str(tmp_path / "out.json"), "--all"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["annotations"][0]["bbox"] == [1.0, 1.0, 19.0, 19.0]
    assert cli_main(["server", "pull", url, str(tmp_path / "q")]) == 0
    with Project.open(tmp_path / "q") as q:
        assert q.annotation_count() == 1
    capsys.readouterr()
    assert cli_main(["server", "list", url.split("?")[0]]) == 0
    assert dia.parse_server_url(url).project in capsys.readouterr().out
    assert cli_main(["export", url.replace("project=", "project=zz_not_there_"), "--format", "coco",
                     "--out", str(tmp_path / "x.json")]) == 1
    assert "no project 'zz_not_there_" in capsys.readouterr().err


def test_gui_reads_of_a_server_project(tmp_path, server):
    """The views' worker reads (store_reads) open a read-only session of their own."""
    from pollenstudio.core.progress import CancelToken
    from pollenstudio.gui.store_reads import category_counts_job, reader

    url = server()
    with Project.create(url, image_root=tmp_path) as p:
        with p.importing():
            p.bulk_insert([{"path": "a.png", "width": 100, "height": 100}], [])
        p.write_proposals(1, [Detection(Box(1, 1, 20, 20), 0, "Betula", 0.9)])
        total, confirmed = category_counts_job(CancelToken(), p.db_path, str(p.folder))
        assert (total, confirmed) == ({1: 1}, {})
        with reader(p.db_path, p.folder) as ro:
            with pytest.raises(ProjectError, match="read-only"):
                ro.add_category("Pinus")


def test_a_labs_reviewers_share_its_projects(tmp_path, pg_url):
    """docs/lab-server.md's setup: the database belongs to a group role, each reviewer logs
    in as a member; a project one member made is every member's to work in."""
    base = pg_url.rsplit("/", 1)[0]
    admin = psycopg.connect(pg_url, autocommit=True)
    tag = uuid.uuid4().hex[:8]
    group, db, anna, bob = f"lab_{tag}", f"pollen_{tag}", f"anna_{tag}", f"bob_{tag}"
    admin.execute(f'CREATE ROLE "{group}" NOLOGIN')
    admin.execute(f'CREATE DATABASE "{db}" OWNER "{group}"')
    for user in (anna, bob):
        admin.execute(f'CREATE ROLE "{user}" LOGIN IN ROLE "{group}"')
    try:
        as_anna = base.replace("://postgres@", f"://{anna}@") + f"/{db}?project=core7"
        as_bob = base.replace("://postgres@", f"://{bob}@") + f"/{db}?project=core7"
        with Project.create(as_anna, image_root=tmp_path) as p:
            p.add_category("Betula")
        with Project.open(as_bob) as p:
            p.add_category("Pinus")
            assert p._conn.execute("SELECT session_user").fetchone()[0] == bob  # who logged in stays known
        with Project.open(as_anna) as p:
            assert [c.name for c in p.categories()] == ["Betula", "Pinus"]
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for role in (anna, bob, group):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def test_an_older_server_project_is_upgraded_by_the_same_migrations(tmp_path, server, pg_url):
    """A project a PollenStudio of schema 1 made on the server: opening runs the migrations
    the SQLite file gets (schema.MIGRATIONS, translated) and keeps its rows."""
    from pollenstudio.project.schema import MIGRATIONS, _statements

    url = server()
    name = dia.parse_server_url(url).project
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute(f'SET search_path TO "{name}"')
        for stmt in _statements(MIGRATIONS[0]):
            conn.execute(dia.translate_ddl(stmt))
        conn.execute(f"CREATE TABLE {dia.VERSION_TABLE} (version BIGINT NOT NULL)")
        conn.execute(f"INSERT INTO {dia.VERSION_TABLE} VALUES (1)")
        conn.execute("INSERT INTO meta VALUES ('app', 'pollenstudio-project'), ('name', 'old core')")
        conn.execute("INSERT INTO images(path, width, height, added) VALUES ('a.png', 100, 80, 0)")
        conn.execute("INSERT INTO categories(name, color) VALUES ('Betula', '#ff0000')")
        conn.execute("INSERT INTO annotations(image_id, x1, y1, x2, y2, category_id, score, source, status, created, "
                     "updated) VALUES (1, 1, 1, 20, 20, 1, 0.7, 'model', 'proposed', 0, 0)")
    with Project.open(url, image_root=tmp_path) as p:
        assert p.schema_version == SCHEMA_VERSION and p.name == "old core"
        assert p.image_counts()[1].undecided == 1  # v3's counts were filled in by its migration
        assert p.review_queue()[0].score == 0.7
        p.accept(p.review_queue()[0].id)
        p.undo()  # v2's history table works
        assert p.annotation(1).status.value == "proposed"
