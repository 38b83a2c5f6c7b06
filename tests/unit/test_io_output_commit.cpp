// Publishing a checkpoint directory: the writer's lock, commit without and
// with overwrite (atomic exchange and the two-rename fallback, with the
// failure injected between its steps), and leftovers of writers that died.

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/model/model.hpp>

#include "test_io_support.hpp"

using xmerge_test::scratch_dir;
namespace fs = std::filesystem;

namespace
{
    std::vector<xmerge::io::tensor_info> one_tensor() { return {{"w", "F32", {4}, 0, 0}}; }

    void fill(xmerge::io::checkpoint_writer& w, float value)
    {
        float* p = w.tensor("w").typed_data<float>();
        for (int i = 0; i < 4; ++i)
        {
            p[i] = value;
        }
        w.finish("w");
    }

    // A whole checkpoint of one tensor, committed.
    void publish(const std::string& dir, float value, const xmerge::io::checkpoint_options& o)
    {
        xmerge::io::checkpoint_writer w(dir, one_tensor(), o);
        fill(w, value);
        w.commit();
    }

    float first_value(const std::string& dir)
    {
        const auto m = xmerge::model::open(dir);
        float v = 0.0f;
        std::memcpy(&v, m.at("w").data, sizeof v);
        return v;
    }

    // Leaves its staging directory behind, as a process killed during a merge does.
    std::string abandoned_staging(scratch_dir& dir, const std::string& name)
    {
        const std::string path = dir / ("." + name + ".partial-999999-0");
        fs::create_directories(path);
        xmerge_test::write_bytes(path + "/model.safetensors", std::string(1000, 'x'));
        return path;
    }
}

TEST_CASE("checkpoint_writer: a directory that appears during the merge is never deleted without overwrite", "[io][commit]")
{
    scratch_dir dir;
    xmerge::io::checkpoint_writer w(dir / "out", one_tensor());
    fill(w, 1.0f);
    // Another program (or a user) fills the output directory meanwhile.
    fs::create_directories(dir / "out");
    xmerge_test::write_bytes(dir / "out/precious.txt", "keep me");
    CHECK_THROWS_WITH(w.commit(), Catch::Contains("appeared and is not empty") && Catch::Contains("left as it is"));
    CHECK(xmerge_test::read_bytes(dir / "out/precious.txt") == "keep me");
    CHECK_FALSE(fs::exists(dir / "out/model.safetensors"));
}

TEST_CASE("checkpoint_writer: a second writer of the same directory is refused while the first is alive", "[io][commit]")
{
    scratch_dir dir;
    xmerge::io::checkpoint_options o;
    o.overwrite = true;
    {
        xmerge::io::checkpoint_writer first(dir / "out", one_tensor(), o);
        CHECK(fs::exists(dir / ".out.lock"));
        CHECK_THROWS_WITH(xmerge::io::checkpoint_writer(dir / "out", one_tensor(), o), Catch::Contains("another process is writing this output directory"));
        CHECK_THROWS_WITH(xmerge::io::checkpoint_writer(dir / "out/", one_tensor(), o), Catch::Contains("another process is writing"));
        // Another directory of the same parent is independent.
        xmerge::io::checkpoint_writer other(dir / "other", one_tensor(), o);
        fill(first, 1.0f);
        first.commit();
        // Committed: the lock is released and its file removed.
        CHECK_FALSE(fs::exists(dir / ".out.lock"));
        xmerge::io::checkpoint_writer second(dir / "out", one_tensor(), o);
        fill(second, 2.0f);
        second.commit();
    }
    CHECK(first_value(dir / "out") == 2.0f);
    CHECK(dir.entries() == std::vector<std::string>{"out"});
}

TEST_CASE("checkpoint_writer: overwrite exchanges the directories in one step", "[io][commit]")
{
    scratch_dir dir;
    xmerge::io::checkpoint_options o;
    o.overwrite = true;
    publish(dir / "out", 1.0f, o);
    std::vector<std::string> seen;
    o.on_commit_step = [&](const char* step)
    {
        seen.push_back(step);
        if (std::string(step) == "in-place")
        {
            // Right after the exchange: the new version is in place, never a missing directory.
            CHECK(first_value(dir / "out") == 2.0f);
        }
    };
    publish(dir / "out", 2.0f, o);
    CHECK(seen == std::vector<std::string>{"staged", "in-place"});
    CHECK(first_value(dir / "out") == 2.0f);
    CHECK(dir.entries() == std::vector<std::string>{"out"});
}

TEST_CASE("checkpoint_writer: a failure between the fallback's two renames is repaired by the next writer", "[io][commit]")
{
    scratch_dir dir;
    xmerge::io::checkpoint_options o;
    o.overwrite = true;
    publish(dir / "out", 1.0f, o);
    o.no_exchange = true;
    o.on_commit_step = [&](const char* step)
    {
        if (std::string(step) == "moved-aside")
        {
            CHECK_FALSE(fs::exists(dir / "out"));
            throw std::runtime_error("killed");  // the process dies here
        }
    };
    {
        xmerge::io::checkpoint_writer w(dir / "out", one_tensor(), o);
        fill(w, 2.0f);
        CHECK_THROWS_WITH(w.commit(), "killed");
    }
    // What a killed process leaves: no output, the previous version aside.
    CHECK_FALSE(fs::exists(dir / "out"));
    REQUIRE(dir.entries().size() == 1);
    CHECK(dir.entries()[0].rfind(".out.old-", 0) == 0);

    // The next writer of that directory puts the previous version back first, and says so.
    std::vector<std::string> notes;
    xmerge::io::checkpoint_options plain;
    plain.on_cleanup = [&](const std::string& note) { notes.push_back(note); };
    CHECK_THROWS_WITH(xmerge::io::checkpoint_writer(dir / "out", one_tensor(), plain), Catch::Contains("exists and is not empty"));
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], Catch::Contains("restored"));
    CHECK(first_value(dir / "out") == 1.0f);
    CHECK(dir.entries() == std::vector<std::string>{"out"});

    // The fallback without a failure replaces the directory and leaves nothing aside.
    o.on_commit_step = nullptr;
    publish(dir / "out", 3.0f, o);
    CHECK(first_value(dir / "out") == 3.0f);
    CHECK(dir.entries() == std::vector<std::string>{"out"});
}

TEST_CASE("checkpoint_writer: staging directories of writers that died are removed by the next one, with a note", "[io][commit]")
{
    scratch_dir dir;
    const std::string stale = abandoned_staging(dir, "out");
    const std::string unrelated = abandoned_staging(dir, "outer");
    xmerge_test::write_bytes(dir / ".out.lock", "");  // an unlocked lock file, as kill -9 leaves it
    std::vector<std::string> notes;
    xmerge::io::checkpoint_options o;
    o.on_cleanup = [&](const std::string& note) { notes.push_back(note); };
    xmerge::io::checkpoint_writer w(dir / "out", one_tensor(), o);
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], Catch::Contains(stale) && Catch::Contains("removed"));
    CHECK_FALSE(fs::exists(stale));
    CHECK(fs::exists(unrelated));  // another output's leftovers are its own writer's business
    fill(w, 1.0f);
    w.commit();
    CHECK(dir.entries() == std::vector<std::string>{".outer.partial-999999-0", "out"});
}

TEST_CASE("clean_leftovers: adapters folded by a run that exited are removed, a live run's kept", "[io][commit]")
{
    scratch_dir dir;
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0)
    {
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    const fs::path dead = dir / (".out.adapters-" + std::to_string(child));
    const fs::path live = dir / (".out.adapters-" + std::to_string(::getpid()));
    const fs::path odd = dir / ".out.adapters-x1";
    for (const auto& p : {dead, live, odd})
    {
        fs::create_directories(p / "m0");
        xmerge_test::write_bytes((p / "m0" / "model.safetensors").string(), std::string(3000000, 'x'));
    }
    const xmerge::io::output_lock lock(dir / "out");
    const auto notes = xmerge::io::clean_leftovers(dir / "out");
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], Catch::Contains(dead.string()) && Catch::Contains("3 MB") && Catch::Contains("adapters folded"));
    CHECK_FALSE(fs::exists(dead));
    CHECK(fs::exists(live));
    CHECK(fs::exists(odd));  // not a process id: not ours to judge
}

TEST_CASE("clean_leftovers: needs the lock, keeps a live writer's staging directory", "[io][commit]")
{
    scratch_dir dir;
    xmerge::io::checkpoint_writer live(dir / "out", one_tensor());
    CHECK_THROWS_WITH(xmerge::io::output_lock(dir / "out"), Catch::Contains("another process is writing"));
    CHECK(fs::exists(live.staging_directory()));
}

TEST_CASE("abandon_unfinished_outputs: removes every unfinished staging directory and lock", "[io][commit]")
{
    scratch_dir dir;
    // In a child process, as the CLI does on a second signal before exiting at once.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0)
    {
        new xmerge::io::checkpoint_writer(dir / "a", one_tensor());
        new xmerge::io::checkpoint_writer(dir / "b", one_tensor());
        const bool made = fs::exists(dir / ".a.lock") && fs::exists(dir / ".b.lock");
        xmerge::io::abandon_unfinished_outputs();
        ::_exit(made ? 0 : 2);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(dir.entries().empty());
}
