%% A call handler for the erlang playbook's tests. Each call is a process in a receive loop that
%% calls back into this module, fully qualified, on every message: like a real call process it
%% runs the new code after its next message once a new version is loaded. A call with media
%% wakes every Tick milliseconds; a quiet one (Tick = infinity) only when asked.
%%
%% One source, every version: erlc -DVSN='"2"' call_handler.erl builds version 2.
-module(call_handler).
-vsn(?VSN).
-export([start_call/2, loop/2, answer/1]).

%% Start call Id and register it as call_Id, so a test finds it by name.
start_call(Id, Tick) ->
    Pid = spawn(?MODULE, loop, [Id, Tick]),
    true = register(list_to_atom("call_" ++ integer_to_list(Id)), Pid),
    Pid.

loop(Id, Tick) ->
    receive
        {ask, From} ->
            From ! {self(), ?MODULE:answer(Id)},
            ?MODULE:loop(Id, Tick);
        hang_up ->
            ok
    after Tick ->
        ?MODULE:loop(Id, Tick)
    end.

%% What this version of the code says: the version it was built as.
answer(_Id) -> ?VSN.
