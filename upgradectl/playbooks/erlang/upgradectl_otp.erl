%% Hot upgrades the OTP way, for upgradectl's `erlang` and `erlang-release` playbooks.
%%
%% A step pipes this file into a short-lived hidden `erl` on the node's host (boot.erl compiles
%% it there), which connects to the running node and loads this module into it: the work then
%% runs inside the node, in a process of its own, so a controller that goes away half-way never
%% leaves a process suspended. Files are read and written by the node, as the node's own user.
%%
%% Each action prints lines for upgradectl to read. A failure ends with one line
%% `WHAT_failed: ...` and exit code 1 (2 when this script itself crashed).
%%
%% Module patches follow release_handler's `{update, Mod, {advanced, Extra}}`: the processes
%% running the patched modules are suspended (sys:suspend), the new code of every module is
%% loaded, each process is converted by sys:change_code with the old vsn, then resumed. A
%% code_change that fails puts the old code back and converts back the processes already
%% converted, so every process lives on with the old version. Processes are witnesses: their
%% pids before and after; any that died fails the patch.
%%
%% No preprocessor runs on this file (boot.erl parses it as it is): no macros, no includes.
%% It must not contain two opening braces in a row, nor an opening brace followed by a percent
%% or hash sign: upgradectl's templates would read them as their own.
-module(upgradectl_otp).
-export([main/2, serve/3]).

%% --- in the hidden node ---------------------------------------------------------------------

%% Connect to UPGRADECTL_NODE, load this module there, run the action there, print its lines.
main(Bin, [Action | Args]) ->
    try
        Node = list_to_atom(env("UPGRADECTL_NODE")),
        Wait = erlang:monotonic_time(millisecond)
               + 1000 * list_to_integer(env("UPGRADECTL_NODE_WAIT", "0")),
        connect(Node, Wait),
        ship(Node, Bin),
        Opts = #{run_dir => env("UPGRADECTL_RUN_DIR"),
                 extra => term(env("UPGRADECTL_EXTRA", "[]")),
                 timeout => list_to_integer(env("UPGRADECTL_SYS_TIMEOUT", "5000")),
                 expect_vsn => env("UPGRADECTL_EXPECT_VSN", ""),
                 previous => env("UPGRADECTL_PREVIOUS", ""),
                 % What is left of the wait, in ms: the node's clock is not this one's.
                 wait => max(0, Wait - erlang:monotonic_time(millisecond))},
        {Code, Lines} = case rpc:call(Node, upgradectl_otp, serve, [Action, Args, Opts], infinity) of
            {badrpc, {'EXIT', {undef, _}}} ->
                {1, ["load_failed: upgradectl_otp did not load in " ++ atom_to_list(Node)]};
            {badrpc, nodedown} when Action =:= "release-upgrade" ->
                {0, ["restarting: " ++ atom_to_list(Node) ++ " went down during the install, as a "
                     "relup that restarts the emulator does; verify waits for it"]};
            {badrpc, Why} -> {1, [fmt("rpc_failed: ~s on ~s: ~p", [Action, Node, Why])]};
            Result -> Result
        end,
        unship(Node),
        [io:format("~ts~n", [Line]) || Line <- Lines],
        halt(Code)
    catch
        throw:{failed, Line} -> io:format("~ts~n", [Line]), halt(1);
        Class:Reason:Stack ->
            io:format("script_failed: ~p:~p ~p~n", [Class, Reason, Stack]), halt(2)
    end.

env(Key) -> env(Key, "").
env(Key, Default) ->
    case os:getenv(Key) of false -> Default; "" -> Default; Value -> Value end.

term(Text) ->
    case erl_scan:string(Text ++ ".") of
        {ok, Tokens, _} ->
            case erl_parse:parse_term(Tokens) of
                {ok, Term} -> Term;
                _ -> fail("usage", "extra ~s is not an Erlang term", [Text])
            end;
        _ -> fail("usage", "extra ~s is not an Erlang term", [Text])
    end.

%% Short or long names, as the node uses: a host with a dot means -name. A node that is not
%% there is waited for until Wait (a relup that restarts the emulator brings it back later).
connect(Node, Wait) ->
    NameType = case string:split(atom_to_list(Node), "@") of
        [_, Host] -> case lists:member($., Host) of true -> longnames; false -> shortnames end;
        _ -> fail("usage", "node name ~s has no @host", [Node])
    end,
    case net_kernel:start([list_to_atom("upgradectl_" ++ os:getpid()), NameType]) of
        {ok, _} -> ok;
        {error, Why} -> fail("connect", "cannot start distribution here (is epmd running?): ~p",
                             [Why])
    end,
    case env("UPGRADECTL_COOKIE") of
        "" -> ok;
        Cookie -> erlang:set_cookie(Node, list_to_atom(Cookie))
    end,
    reach(Node, Wait).

reach(Node, Wait) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang ->
            erlang:monotonic_time(millisecond) < Wait
                orelse fail("connect", "cannot reach ~s (is it running, with this cookie?)",
                            [Node]),
            timer:sleep(500),
            reach(Node, Wait)
    end.

%% A helper left by an earlier run that is still at work (its step timed out) is never replaced.
ship(Node, Bin) ->
    rpc:call(Node, code, soft_purge, [upgradectl_otp]) =:= true
        orelse fail("busy", "an earlier upgradectl helper still runs in ~s", [Node]),
    case rpc:call(Node, code, load_binary, [upgradectl_otp, "upgradectl_otp.erl", Bin]) of
        {module, upgradectl_otp} -> ok;
        Error -> fail("load", "cannot load the helper into ~s (~p): run the step with the "
                      "node's own erl (the `erl` variable)", [Node, Error])
    end.

unship(Node) ->
    rpc:call(Node, code, delete, [upgradectl_otp]),
    rpc:call(Node, code, soft_purge, [upgradectl_otp]).

%% --- in the node ----------------------------------------------------------------------------

%% Run Action in a process that nothing links to: it finishes even if the caller goes away.
serve(Action, Args, Opts) ->
    {Worker, Ref} = spawn_monitor(fun() -> exit({done, act(Action, Args, Opts)}) end),
    receive
        {'DOWN', Ref, process, Worker, {done, Result}} -> Result;
        {'DOWN', Ref, process, Worker, Why} -> {2, [fmt("script_failed: ~p", [Why])]}
    end.

act(Action, Args, Opts) ->
    put(lines, []),
    try
        dispatch(Action, Args, Opts),
        {0, lines()}
    catch throw:{failed, Line} -> {1, lines() ++ [Line]}
    end.

dispatch("patch", Sources, O) when Sources =/= [] -> patch(Sources, O);
dispatch("verify", [], O) -> verify(O);
dispatch("rollback", [], O) -> rollback(O);
dispatch("version", [Mod], _) when Mod =/= "" -> say("vsn: ~s", [show(loaded_vsn(list_to_atom(Mod)))]);
dispatch("version", _, _) ->
    say("vsn: unknown (set the variable module to the module whose vsn is the node's version)", []);
dispatch("release-patch", [Vsn, Package], O) -> release_install(Vsn, Package, hot, O);
dispatch("release-upgrade", [Vsn, Package], O) -> release_install(Vsn, Package, restart, O);
dispatch("release-verify", [Vsn], O) -> release_verify(Vsn, O);
dispatch("release-rollback", [], O) -> release_rollback(O);
dispatch("release-version", [], _) -> release_version();
dispatch(Action, Args, _) -> fail("usage", "unknown action ~s ~p", [Action, Args]).

say(Format, Args) -> put(lines, [fmt(Format, Args) | get(lines)]).
lines() -> lists:reverse(get(lines)).
%% One line whatever ~p does with a large term: upgradectl reads output line by line.
fmt(Format, Args) ->
    re:replace(io_lib:format(Format, Args), "\\s*\\n\\s*", " ", [global, unicode, {return, list}]).
fail(What, Format, Args) -> throw({failed, What ++ "_failed: " ++ fmt(Format, Args)}).

%% --- module patches -------------------------------------------------------------------------

%% One module of a patch: where its code lives, the code it runs, the code it gets.
-record(mod, {name, path, old_bin, old_vsn, new_bin, new_vsn}).

patch(Sources, O) ->
    Mods = [module_of_patch(File) || File <- beam_files(Sources)],
    Names = [M#mod.name || M <- Mods],
    [free_old_code(Name) || Name <- Names],
    Procs = running(Names),
    Pids = pids(Procs),
    keep(Mods, O),
    Monitors = [{erlang:monitor(process, Pid), Pid} || Pid <- Pids],
    suspend(Pids, O),
    % Whatever happens while they are suspended, they are resumed: a suspended call is a frozen one.
    Outcome = try swap(Procs, Mods, O) after resume(Pids) end,
    case Outcome of
        ok -> converted(Procs, Mods, Monitors, O);
        {failed, Failure} ->
            Alive = [Pid || Pid <- Pids, is_process_alive(Pid)],
            write_state(O, {restored, Mods, Alive}),
            fail("code_change", "~s; every module is back on its old code, ~b of ~b processes "
                 "live on with the old version", [Failure, length(Alive), length(Pids)])
    end.

%% New code for every module, then every process converted; or all of it undone.
swap(Procs, Mods, O) ->
    load([{M#mod.name, M#mod.path, M#mod.new_bin} || M <- Mods]),
    % From here the node runs new code: a rollback must know, whatever happens next.
    write_state(O, {patched, Mods, pids(Procs)}),
    case change(Procs, Mods, up, O) of
        ok -> ok;
        {error, Done, Failure} ->
            back_to_old(Done, Mods, O),
            {failed, Failure}
    end.

%% Resumed: each process must answer (it has handled every message queued while it was
%% suspended, with the new code) or the patch failed.
converted(Procs, Mods, Monitors, O) ->
    Pids = pids(Procs),
    [answers(Pid, O) || Pid <- Pids],
    case died(Monitors, O) of
        [] ->
            [install(M) || M <- Mods],
            write_state(O, {patched, Mods, Pids}),
            [code:soft_purge(M#mod.name) || M <- Mods],
            say("patched: ~s; ~s; the replaced .beam files are kept in ~s",
                [changes(Mods), conversions(length(Pids)), run_dir(O)]);
        Dead ->
            Living = [Monitor || {_, Pid} = Monitor <- Monitors, not lists:keymember(Pid, 1, Dead)],
            downgrade([P || {Pid, _} = P <- Procs, lists:keymember(Pid, 2, Living)], Mods, O),
            % Until it was suspended, each of them ran the new code that killed the others: those
            % its next message killed are counted with them.
            AllDead = Dead ++ died(Living, O),
            Alive = Pids -- [Pid || {Pid, _} <- AllDead],
            write_state(O, {restored, Mods, Alive}),
            fail("died", "~b of ~b processes died after the patch (~s); the ~b left are back "
                 "on the old code", [length(AllDead), length(Pids), describe_dead(AllDead),
                                     length(Alive)])
    end.

%% The .beam files of a patch: files, and the *.beam files of directories.
beam_files(Sources) ->
    Files = lists:append([case filelib:is_dir(S) of
                              true -> lists:sort(filelib:wildcard(filename:join(S, "*.beam")));
                              false -> [S]
                          end || S <- Sources]),
    Files =/= [] orelse fail("copy", "no .beam file in ~s", [string:join(Sources, " ")]),
    Files.

module_of_patch(File) ->
    New = case file:read_file(File) of
        {ok, Bin} -> Bin;
        {error, Why} -> fail("copy", "no new .beam at ~s: ~p", [File, Why])
    end,
    Name = case beam_lib:info(New) of
        Info when is_list(Info) -> proplists:get_value(module, Info);
        _ -> fail("read", "~s is not a .beam file", [File])
    end,
    Path = case code:which(Name) of
        P when is_list(P) -> P;
        Where -> fail("load", "~s is ~p, not a .beam file in the code path", [Name, Where])
    end,
    Old = read(Path),
    % The code loaded must be the .beam in the code path, else a restart would load another. A
    % module not loaded yet (an interactive node loads on first call) is simply loaded new.
    code:is_loaded(Name) =:= false orelse md5(Old) =:= Name:module_info(md5)
        orelse fail("disk_check", "the .beam of ~s on disk is not the loaded code", [Name]),
    #mod{name = Name, path = Path, old_bin = Old, old_vsn = vsn(Old), new_bin = New,
         new_vsn = vsn(New)}.

read(File) ->
    case file:read_file(File) of
        {ok, Bin} -> Bin;
        {error, Why} -> fail("read", "~s: ~p", [File, Why])
    end.

md5(Bin) -> {ok, {_, Md5}} = beam_lib:md5(Bin), Md5.

%% As release_handler_1:get_vsn/1: a string vsn as it is, -vsn(Term) as Term.
vsn(Bin) ->
    {ok, {_, Vsn}} = beam_lib:version(Bin),
    case io_lib:printable_list(Vsn) andalso Vsn =/= [] of
        true -> Vsn;
        false -> case Vsn of [Term] -> Term; _ -> Vsn end
    end.

loaded_vsn(Name) ->
    code:is_loaded(Name) =/= false orelse fail("not_loaded", "~s is not loaded", [Name]),
    Vsn = proplists:get_value(vsn, Name:module_info(attributes)),
    case io_lib:printable_list(Vsn) of true -> Vsn; false -> case Vsn of [T] -> T; _ -> Vsn end end.

show(Vsn) ->
    case io_lib:printable_list(Vsn) andalso Vsn =/= [] of
        true -> Vsn;
        false -> fmt("~w", [Vsn])
    end.

changes(Mods) ->
    string:join([fmt("~s ~s -> ~s", [M#mod.name, show(M#mod.old_vsn), show(M#mod.new_vsn)])
                 || M <- Mods], ", ").

conversions(0) ->
    "no sys-compatible process runs them (others move on with their next call)";
conversions(N) -> fmt("~s converted by code_change, all ~b alive with the same pids", [processes(N), N]).

processes(1) -> "1 process";
processes(N) -> fmt("~b processes", [N]).

%% Loading needs the old code gone; a process still running it is a live call: never kill it.
free_old_code(Name) ->
    code:soft_purge(Name) orelse begin
        Holders = [P || P <- erlang:processes(), erlang:check_process_code(P, Name)],
        N = length(Holders),
        fail("soft_purge", "old code of ~s still running in ~s: ~s; wait for ~s to move on and "
             "patch again, or drain the node (upgradectl upgrade)",
             [Name, processes(N), describe(Holders), case N of 1 -> "it"; _ -> "them" end])
    end.

%% Who a process is, for people: pid, registered name, what it runs now.
describe(Pids) ->
    Shown = [describe_one(Pid) || Pid <- lists:sublist(Pids, 10)],
    More = case length(Pids) - 10 of N when N > 0 -> [fmt("~b more", [N])]; _ -> [] end,
    string:join(Shown ++ More, ", ").

describe_one(Pid) ->
    Name = case erlang:process_info(Pid, registered_name) of
        {registered_name, R} -> fmt(" ~s", [R]);
        _ -> ""
    end,
    Now = case erlang:process_info(Pid, current_function) of
        {current_function, {M, F, A}} -> fmt(" in ~s:~s/~b", [M, F, A]);
        _ -> ""
    end,
    fmt("~w~s~s", [Pid, Name, Now]).

describe_dead(Dead) ->
    [say("error: ~w died: ~p", [Pid, Why]) || {Pid, Why} <- Dead],
    {Pid, Why} = hd(Dead),
    fmt("~w ~s", [Pid, gist(Why)]).

%% An Erlang error in a few words: its reason and where, without the whole stack.
gist({'EXIT', Reason}) -> gist(Reason);
gist({Reason, [{M, F, A, _} | _]}) when is_list(A) -> fmt("~P in ~s:~s/~b", [Reason, 4, M, F, length(A)]);
gist({Reason, [{M, F, A, _} | _]}) -> fmt("~P in ~s:~s/~b", [Reason, 4, M, F, A]);
gist(Reason) -> fmt("~P", [Reason, 5]).

%% The processes running Names, each paired with the module it runs: {Pid, Name}. Found as
%% release_handler finds them (the modules of every supervisor's children, the handlers of
%% gen_event managers) and by their `$initial_call` (gen_server, gen_statem, supervisor and
%% other proc_lib processes started outside a supervision tree).
running(Names) ->
    Me = self(),
    Calls = [{Pid, initial_call(Pid)} || Pid <- erlang:processes(), Pid =/= Me],
    Found = lists:append([modules_of(Pid, Call) || {Pid, Call} <- Calls]),
    lists:usort([{Pid, M} || {Pid, M} <- Found, lists:member(M, Names)]).

initial_call(Pid) ->
    Dictionary = try erlang:process_info(Pid, {dictionary, '$initial_call'}) of
        { {dictionary, '$initial_call'}, Call} -> [{'$initial_call', Call}];
        _ -> []
    catch error:badarg ->  % before OTP 26: the whole dictionary
        case erlang:process_info(Pid, dictionary) of
            {dictionary, D} -> D;
            undefined -> []
        end
    end,
    proplists:get_value('$initial_call', Dictionary).

modules_of(Pid, {gen_event, init_it, 6}) -> [{Pid, M} || M <- handlers(Pid)];
modules_of(Pid, {supervisor, M, 1}) -> [{Pid, M} | children(Pid)];
modules_of(Pid, {supervisor_bridge, M, 1}) -> [{Pid, M}];
modules_of(Pid, {M, _, _}) when is_atom(M) -> [{Pid, M}];
modules_of(_, _) -> [].  % a plain process: not sys-compatible, it moves on by itself

handlers(Pid) ->
    case catch gen:call(Pid, self(), which_handlers, 5000) of
        {ok, Handlers} -> [case H of {M, _Id} -> M; M -> M end || H <- Handlers];
        _ -> []
    end.

%% As release_handler_1:get_supervised_procs/0: the modules a child spec names.
children(Sup) ->
    case catch gen_server:call(Sup, which_children, 5000) of
        Children when is_list(Children) ->
            [{Pid, M} || {_, Pid, _, Mods} <- Children, is_pid(Pid), is_list(Mods), M <- Mods];
        _ -> []
    end.

pids(Procs) -> lists:usort([Pid || {Pid, _} <- Procs]).

keep(Mods, O) ->
    Dir = run_dir(O),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    [ok = file:write_file(kept(M#mod.name, O), M#mod.old_bin) || M <- Mods],
    ok.

run_dir(#{run_dir := Dir}) -> Dir.
kept(Name, O) -> filename:join(run_dir(O), atom_to_list(Name) ++ ".beam").

%% Suspend them all, or none: one that does not answer is not sys-compatible, or busy.
suspend(Pids, #{timeout := T}) ->
    lists:foldl(fun(Pid, Done) ->
        try sys:suspend(Pid, T) of
            ok -> [Pid | Done]
        catch exit:Why ->
            resume(Done),
            catch sys:resume(Pid),  % as release_handler: in case it gets suspended later
            fail("suspend", "~s did not suspend (~p): nothing was changed",
                 [describe_one(Pid), Why])
        end
    end, [], Pids).

resume(Pids) -> [catch sys:resume(Pid) || Pid <- Pids], ok.

%% The processes suspended: a live one that did not suspend is said in a warning.
suspend_those_that_can(Pids, #{timeout := T}) ->
    [Pid || Pid <- Pids,
            try sys:suspend(Pid, T) of
                ok -> true
            catch exit:Why ->
                catch sys:resume(Pid),  % as release_handler: in case it gets suspended later
                is_process_alive(Pid) andalso
                    say("warning: ~s did not suspend (~p): left as it is", [describe_one(Pid), Why]),
                false
            end].

%% Load every module of the patch, or put back those already loaded.
load(Specs) ->
    lists:foldl(fun({Name, Path, Bin}, Done) ->
        case code:load_binary(Name, Path, Bin) of
            {module, Name} -> [Name | Done];
            Error ->
                fail("load", "~s: ~p~s", [Name, Error, case Done of
                    [] -> "";
                    _ -> "; " ++ restore_code(Done, Specs)
                end])
        end
    end, [], Specs).

%% Each process converted by its module's code_change: up, with the old vsn (the vsn of the
%% code it ran); down, with {down, Vsn}, Vsn the vsn it goes back to, as release_handler does.
change(Procs, Mods, Direction, #{extra := Extra, timeout := T}) ->
    change(Procs, Mods, Direction, Extra, T, []).

change([], _, _, _, _, _) -> ok;
change([{Pid, Name} = Proc | Rest], Mods, Direction, Extra, T, Done) ->
    #mod{old_vsn = OldVsn} = lists:keyfind(Name, #mod.name, Mods),
    Vsn = case Direction of up -> OldVsn; down -> {down, OldVsn} end,
    Result = try sys:change_code(Pid, Name, Vsn, Extra, T) catch exit:Why -> {error, Why} end,
    case Result of
        ok -> change(Rest, Mods, Direction, Extra, T, [Proc | Done]);
        {error, Reason} ->
            % The whole error on a line of its own; the failure line (which upgradectl shows in
            % its summary, cut at 200 characters) has its gist.
            say("error: ~s:code_change(~p, ...) in ~s: ~p", [Name, Vsn, describe_one(Pid), Reason]),
            {error, lists:reverse(Done),
             fmt("~s:code_change(~p, ...) failed in ~w: ~s", [Name, Vsn, Pid, gist(Reason)])}
    end.

%% A failed code_change: convert back those already converted (with the new code, which knows
%% both shapes), then load the old code again.
back_to_old(Done, Mods, O) ->
    [free_old_code(M#mod.name) || M <- Mods],  % else converting back would strand them
    case change(Done, Mods, down, O) of
        ok -> ok;
        {error, _, Failure} -> say("warning: converting back failed too: ~s", [Failure])
    end,
    Restored = restore_code([M#mod.name || M <- Mods],
                            [{M#mod.name, M#mod.path, M#mod.old_bin} || M <- Mods]),
    say("restored: ~s", [Restored]).

%% Load the old code of Names again; the new code, now old, is purged when nothing runs it.
restore_code(Names, Specs) ->
    Results = [begin
        free_old_code(Name),
        {_, Path, Bin} = lists:keyfind(Name, 1, Specs),
        {module, Name} = code:load_binary(Name, Path, Bin),
        code:soft_purge(Name),
        atom_to_list(Name)
    end || Name <- Names],
    "old code loaded again: " ++ string:join(Results, ", ").

%% Back from the new code to the old one, the OTP way: suspend, code_change down, load, resume.
%% The way back brings back every process it can: one that does not suspend is left out, as
%% release_handler_1 leaves it out (one on the new code may die of it before it is suspended).
downgrade(Procs, Mods, O) ->
    Names = [M#mod.name || M <- Mods],
    [free_old_code(Name) || Name <- Names],  % checked first: then nothing is half done
    Pids = suspend_those_that_can(pids(Procs), O),
    try
        case change([P || {Pid, _} = P <- Procs, lists:member(Pid, Pids)], Mods, down, O) of
            ok -> ok;
            {error, _, Failure} -> say("warning: converting back failed: ~s", [Failure])
        end,
        restore_code(Names, [{M#mod.name, M#mod.path, M#mod.old_bin} || M <- Mods])
    after resume(Pids)
    end,
    [answers(Pid, O) || Pid <- Pids],
    ok.

%% Wait for a process to handle what it was sent: sys:get_state is answered after every
%% message queued before it. A busy process that is still alive counts as alive.
answers(Pid, #{timeout := T}) ->
    try sys:get_state(Pid, T) of _ -> true
    catch exit:_ -> is_process_alive(Pid)
    end.

%% The monitored processes that are dead, each with why (the 'DOWN' of one found dead is on its
%% way).
died(Monitors, #{timeout := T}) ->
    [{Pid, receive {'DOWN', Ref, process, Pid, Why} -> Why after T -> unknown end}
     || {Ref, Pid} <- Monitors, not is_process_alive(Pid)].

%% Copy next to the target, then rename over it: a reader never sees half a file.
install(#mod{path = Path, new_bin = Bin}) -> write_atomically(Path, Bin).

write_atomically(Path, Bin) ->
    Partial = Path ++ ".upgradectl-partial",
    ok = file:write_file(Partial, Bin),
    ok = file:rename(Partial, Path).

%% What this run did, for verify and rollback: {patched | restored | rolled_back, Mods, Pids}.
state_file(O) -> filename:join(run_dir(O), "patch.state").

write_state(O, {Kind, Mods, Pids}) ->
    Plain = {Kind, [{M#mod.name, M#mod.path, M#mod.old_vsn, M#mod.new_vsn} || M <- Mods],
             [pid_to_list(Pid) || Pid <- Pids]},
    ok = filelib:ensure_dir(state_file(O)),
    ok = file:write_file(state_file(O), io_lib:format("~p.~n", [Plain])).

read_state(O) ->
    case file:consult(state_file(O)) of
        {ok, [{Kind, Mods, Pids}]} ->
            {Kind, [#mod{name = N, path = P, old_vsn = Old, new_vsn = New,
                         old_bin = read(kept(N, O)), new_bin = none}
                    || {N, P, Old, New} <- Mods],
             [list_to_pid(Pid) || Pid <- Pids]};
        _ -> none
    end.

%% The patch (or, after a rollback, the old code) is what runs and what is on disk, and every
%% process the run converted is alive.
verify(O) ->
    case read_state(O) of
        none -> say("verified: this run changed nothing", []);
        {Kind, Mods, Pids} ->
            [verify_module(M, Kind, O) || M <- Mods],
            Dead = [Pid || Pid <- Pids, not answers(Pid, O)],
            Dead =:= [] orelse fail("verify", "~b of ~b processes of the patch died: ~w",
                                    [length(Dead), length(Pids), Dead]),
            Now = length(pids(running([M#mod.name || M <- Mods]))),
            say("verified: ~s; all ~b processes from the patch alive with the same pids "
                "(~b running these modules now)",
                [loaded_vsns(Mods), length(Pids), Now])
    end.

verify_module(#mod{name = Name} = M, Kind, O) ->
    Expected = case Kind of
        patched -> case maps:get(expect_vsn, O) of "" -> show(M#mod.new_vsn); V -> V end;
        _ -> show(M#mod.old_vsn)
    end,
    Now = show(loaded_vsn(Name)),
    Now =:= Expected orelse fail("verify", "~s has vsn ~s loaded, expected ~s",
                                 [Name, Now, Expected]),
    md5(read(code:which(Name))) =:= Name:module_info(md5)
        orelse fail("verify", "the .beam of ~s on disk is not the loaded code", [Name]).

loaded_vsns(Mods) ->
    string:join([fmt("~s vsn ~s loaded", [M#mod.name, show(loaded_vsn(M#mod.name))])
                 || M <- Mods], ", ").

%% Undo a patch that went through: the OTP way back (suspend, code_change down with the new
%% code, load the old code, resume), then the kept .beam files back on disk.
rollback(O) ->
    case read_state(O) of
        none -> say("rolled_back: nothing to restore, the patch changed nothing", []);
        {patched, Mods, _} ->
            Procs = running([M#mod.name || M <- Mods]),
            downgrade(Procs, Mods, O),
            [write_atomically(M#mod.path, M#mod.old_bin) || M <- Mods],
            Pids = pids(Procs),
            Alive = [Pid || Pid <- Pids, is_process_alive(Pid)],
            write_state(O, {rolled_back, Mods, Alive}),
            say("rolled_back: ~s; ~b of ~b processes converted back, alive on the old code",
                [string:join([fmt("~s back to ~s", [M#mod.name, show(M#mod.old_vsn)])
                              || M <- Mods], ", "), length(Alive), length(Pids)]);
        {_, _, _} -> say("rolled_back: nothing to restore, the patch step put the old code back", [])
    end.

%% --- release upgrades -----------------------------------------------------------------------

%% Unpack (once) and install release Vsn with its relup. A relup that restarts the emulator
%% (a new ERTS, or restart_emulator) restarts every process: `hot` refuses it, `restart` (after
%% a drain) lets it happen. Made permanent by release-verify, once the node is seen well.
release_install(Vsn, Package, Mode, O) ->
    handler_running(),
    Current = current_release(),
    case Current of
        Vsn -> say("installed: release ~s is already the current one", [Vsn]);
        _ -> release_install(Vsn, Package, Mode, Current, O)
    end.

release_install(Vsn, Package, Mode, Current, O) ->
    lists:keymember(Vsn, 2, release_handler:which_releases()) orelse
        case release_handler:unpack_release(Package) of
            {ok, Vsn} -> say("unpacked: ~s as release ~s", [Package, Vsn]);
            {ok, Other} -> fail("unpack", "~s holds release ~s, not ~s", [Package, Other, Vsn]);
            {error, Error} -> fail("unpack", "~s: ~p", [Package, Error])
        end,
    Instructions = relup_from(Vsn, Current),
    Restart = [I || I <- Instructions, I =:= restart_new_emulator orelse I =:= restart_emulator],
    case {Restart, Mode} of
        {[Why | _], hot} ->
            fail("hot_upgrade", "the relup from ~s to ~s has ~s: the node would restart, every "
                 "call with it; nothing was installed; drain it first: upgradectl upgrade",
                 [Current, Vsn, Why]);
        _ -> ok
    end,
    Names = lists:usort([module(M) || {suspend, Ms} <- Instructions, M <- Ms]),
    Pids = pids(running(Names)),
    write_release_state(O, {installing, Current, Vsn, Pids}),
    case Restart of
        [] -> ok;
        [How | _] -> say("restarting: the relup has ~s: the node restarts into ~s", [How, Vsn])
    end,
    % {ok, OtherVsn, _}: the release left behind going up, the one gone to going down.
    case release_handler:install_release(Vsn) of
        {ok, _, _} -> ok;
        {continue_after_restart, _, _} -> ok;
        {error, Reason} -> fail("install", "release ~s: ~p; the node runs ~s", [Vsn, Reason,
                                                                             current_release()])
    end,
    Dead = [Pid || Pid <- Pids, not answers(Pid, O)],
    write_release_state(O, {installed, Current, Vsn, Pids -- Dead}),
    Dead =:= [] orelse fail("died", "~b of ~b processes running ~s died in the upgrade: ~w",
                            [length(Dead), length(Pids), modules(Names), Dead]),
    say("installed: release ~s (was ~s) by its relup; ~s of ~s kept running with the same "
        "pids", [Vsn, Current, processes(length(Pids)), modules(Names)]).

module({M, _Timeout}) -> M;
module(M) -> M.

modules([]) -> "no module";
modules(Names) -> string:join([atom_to_list(N) || N <- Names], ", ").

%% A node back from a restart answers before its boot has started release_handler: wait for
%% the boot to end, until Wait.
booted(Wait) ->
    Started = element(1, init:get_status()) =:= started
              andalso whereis(release_handler) =/= undefined,
    case Started orelse erlang:monotonic_time(millisecond) >= Wait of
        true -> handler_running();
        false -> timer:sleep(500), booted(Wait)
    end.

handler_running() ->
    whereis(release_handler) =/= undefined
        orelse fail("release_handler", "release_handler is not running: start sasl", []).

%% The release the node runs: `current` (installed, not yet permanent), else the permanent one.
current_release() ->
    Releases = release_handler:which_releases(),
    case [V || {_, V, _, current} <- Releases] of
        [V | _] -> V;
        [] -> hd([V || {_, V, _, permanent} <- Releases])
    end.

%% The relup instructions from Current to Vsn: up, from Vsn's relup; down (back to an older
%% release), from Current's.
relup_from(Vsn, Current) ->
    case instructions(filename:join([releases_dir(), Vsn, "relup"]), Vsn, Current, up) of
        false ->
            Down = filename:join([releases_dir(), Current, "relup"]),
            case instructions(Down, Current, Vsn, down) of
                false -> fail("relup", "no relup from ~s to ~s", [Current, Vsn]);
                Found -> Found
            end;
        Found -> Found
    end.

instructions(Relup, Vsn, Other, Direction) ->
    case file:consult(Relup) of
        {ok, [{Vsn, Ups, Downs}]} ->
            case lists:keyfind(Other, 1, case Direction of up -> Ups; down -> Downs end) of
                {Other, _, Instructions} -> Instructions;
                false -> false
            end;
        _ -> false
    end.

releases_dir() ->
    case application:get_env(sasl, releases_dir) of
        {ok, Dir} -> Dir;
        undefined ->
            case os:getenv("RELDIR") of
                false -> filename:join(code:root_dir(), "releases");
                Dir -> Dir
            end
    end.

release_state_file(O) -> filename:join(run_dir(O), "release.state").

write_release_state(O, {Kind, From, To, Pids}) ->
    ok = filelib:ensure_dir(release_state_file(O)),
    Plain = {Kind, From, To, [pid_to_list(Pid) || Pid <- Pids]},
    ok = file:write_file(release_state_file(O), io_lib:format("~p.~n", [Plain])).

read_release_state(O) ->
    case file:consult(release_state_file(O)) of
        {ok, [{Kind, From, To, Pids}]} -> {Kind, From, To, [list_to_pid(P) || P <- Pids]};
        _ -> none
    end.

%% Release Vsn (or, after a rollback, the one restored) is current, the processes the install
%% saw are alive; then it is made permanent, so that a restart comes back into it.
release_verify(Vsn, #{wait := Wait} = O) ->
    booted(erlang:monotonic_time(millisecond) + Wait),
    case read_release_state(O) of
        none -> say("verified: this run installed nothing; the node runs release ~s",
                    [current_release()]);
        {rolled_back, From, _, Alive} -> release_verify(From, Alive, O);
        {_, _, _, Alive} -> release_verify(Vsn, Alive, O)
    end.

release_verify(Expected, Pids, O) ->
    Current = current_release(),
    Current =:= Expected
        orelse fail("verify", "the node runs release ~s, expected ~s", [Current, Expected]),
    Dead = [Pid || Pid <- Pids, not answers(Pid, O)],
    Dead =:= [] orelse fail("verify", "~b of ~b processes died: ~w",
                            [length(Dead), length(Pids), Dead]),
    case release_handler:make_permanent(Expected) of
        ok -> ok;
        {error, Why} -> fail("permanent", "release ~s: ~p", [Expected, Why])
    end,
    say("verified: release ~s is current and permanent; all ~b processes from the install "
        "alive with the same pids", [Expected, length(Pids)]).

%% Install the previous release again (its relup down), and make it permanent.
release_rollback(#{previous := Previous} = O) ->
    handler_running(),
    case {read_release_state(O), Previous} of
        {none, ""} -> say("rolled_back: nothing to restore, this run installed nothing", []);
        {none, _} -> install_again(Previous, [], O);
        { {_, From, _, Seen}, ""} -> install_again(From, Seen, O);
        { {_, _, _, Seen}, _} -> install_again(Previous, Seen, O)
    end.

install_again(To, Pids, O) ->
    case current_release() of
        To -> say("rolled_back: release ~s is the current one; nothing to do", [To]);
        Now ->
            case release_handler:install_release(To) of
                {ok, _, _} -> ok;
                {continue_after_restart, _, _} -> ok;
                {error, Error} -> fail("rollback", "installing release ~s again: ~p", [To, Error])
            end,
            ok = release_handler:make_permanent(To),
            say("rolled_back: release ~s installed again (was ~s) and permanent", [To, Now])
    end,
    Alive = [Pid || Pid <- Pids, is_process_alive(Pid)],
    write_release_state(O, {rolled_back, To, To, Alive}).

%% For `status`: the release the node runs, and every release it knows.
release_version() ->
    handler_running(),
    Releases = release_handler:which_releases(),
    Current = current_release(),
    Permanent = hd([V || {_, V, _, permanent} <- Releases] ++ ["none"]),
    case Current of
        Permanent -> say("release: ~s", [Current]);
        _ -> say("release: ~s (current; permanent: ~s)", [Current, Permanent])
    end,
    [say("  ~s ~s ~s", [Name, V, Status]) || {Name, V, _, Status} <- Releases],
    ok.
